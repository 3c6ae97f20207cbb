/**
 * The inference side of the chart (issue 15), rendered by the real helm: modes, accelerators and
 * GPU sharing, the `swift deploy` arguments, Service types, Ingress with TLS, the HPA, the PDB,
 * topology spread, placement on the daemon's model labels, and the `helm test` of /v1/models
 * (whose script runs here against a real HTTP server). Schema validation of every object is in
 * chart.test.ts, over the same value sets.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { formatRef, parseRef } from '../../src/core/ref.js';
import { tmpDir } from '../support/index.js';
import { resolveEnv } from '../topology/kubelet.js';
import {
  NAMESPACE,
  RELEASE,
  configMapFiles,
  find,
  findAll,
  helmPath,
  podSpec,
  podTemplate,
  render,
  renderError,
  renderSet,
  requireTool,
  type Container,
  type K8sObject,
  type PodSpec,
  type Rendered,
} from './support.js';

const runs = requireTool('helm', helmPath, 'HELM_BIN');
const FULL = `${RELEASE}-swift-fetch`;
const BASE = ['inference.enabled=true', 'inference.image.tag=test'];

interface Inference {
  dep: K8sObject;
  spec: PodSpec;
  main: Container;
  init(name: string): Container | undefined;
}

function inference(r: Rendered): Inference {
  const dep = find(r, 'Deployment', '-inference');
  const spec = podSpec(dep);
  return { dep, spec, main: spec.containers.find((c) => c.name === 'swift')!, init: (name) => spec.initContainers?.find((c) => c.name === name) };
}

const renderInference = async (set: string[] = [], files: string[] = []) => inference(await render(files, [...BASE, ...set]));
const depJson = (i: Inference) => JSON.stringify(i.dep);

describe.skipIf(!runs)('inference side of the chart', () => {
  describe('mode init', () => {
    it.each(['inference', 'inference-hostnetwork'])('%s: gates ms-swift on swift-fetch init against the node daemon', async (set) => {
      const r = await renderSet(set);
      const { spec, main, init } = inference(r);
      const dsSpec = podSpec(find(r, 'DaemonSet'));
      const ds = dsSpec.containers[0]!;
      const hostNetwork = dsSpec.hostNetwork === true;
      // The port a pod reaches its node's daemon on at status.hostIP.
      const nodePort = hostNetwork ? ds.ports![0]!.containerPort : ds.ports![0]!.hostPort;
      expect(nodePort).toBeGreaterThan(0);
      if (hostNetwork) expect(ds.ports![0]!.hostPort).toBe(ds.ports![0]!.containerPort);

      const wait = init('wait-for-model')!;
      expect(wait.args).toEqual([
        'init', 'ms://Qwen/Qwen2.5-7B-Instruct', '--store', '/models', '--daemon', `http://$(HOST_IP):${nodePort}`, '--timeout', '30m', '--link-file', '/models-path/path',
        '--daemon-token-file', '/etc/swift-fetch/api-token/token', '--no-self-pull',
      ]);
      expect(wait.env).toContainEqual({ name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } });
      expect(wait.securityContext?.runAsNonRoot).toBe(true);

      expect(main.command?.slice(0, 2)).toEqual(['sh', '-c']);
      expect(main.command?.[2]).toContain('swift deploy --model "$(cat /models-path/path)" --port 8000');
      // Derived flags first, extraArgs last (argparse keeps the last of a repeated flag).
      expect(main.args).toEqual(['--infer_backend', 'vllm', '--vllm_tensor_parallel_size', '2', '--served_model_name', 'qwen', '--max_model_len', '8192']);
      expect(main.resources?.limits).toEqual({ 'nvidia.com/gpu': 2, memory: '64Gi' });
      expect(main.env).toContainEqual({ name: 'HF_HUB_OFFLINE', value: '1' });
      const store = main.volumeMounts!.find((m) => m.mountPath === '/models')!;
      expect(store.readOnly).toBe(true);
      expect(wait.volumeMounts!.find((m) => m.mountPath === '/models')!.readOnly).toBe(true);
      // Same volume source as the daemon's store.
      expect(spec.volumes!.find((v) => v.name === store.name)).toEqual(dsSpec.volumes!.find((v) => v.name === 'store'));
      expect(find(r, 'Service', '-inference')).toBeDefined();
    });

    it('opens the store to the init container only when it may pull by itself', async () => {
      const ro = inference(await renderSet('inference')).init('wait-for-model')!;
      expect(ro.env!.map((e) => e.name)).not.toContain('HF_TOKEN');
      // Read-only store, no hub settings: init must never fall back to pulling from a hub.
      expect(ro.args).toContain('--no-self-pull');
      const { spec, main, init } = inference(await render(['inference.yaml', 'models.yaml'], ['inference.selfPullFallback=true']));
      const wait = init('wait-for-model')!;
      expect(wait.args).not.toContain('--no-self-pull');
      expect(wait.volumeMounts!.find((m) => m.mountPath === '/models')!.readOnly).toBe(false);
      expect(wait.env!.find((e) => e.name === 'HF_TOKEN')!.valueFrom).toEqual({ secretKeyRef: { name: 'hf-token', key: 'HF_TOKEN', optional: false } });
      expect(wait.env).toContainEqual({ name: 'SWIFT_FETCH_STATE_DIR', value: '/tmp/state' });
      expect(wait.volumeMounts!.find((m) => m.mountPath === '/tmp')).toBeDefined();
      expect(main.volumeMounts!.find((m) => m.mountPath === '/models')!.readOnly).toBe(true);
      expect(spec.volumes!.map((v) => v.name)).toContain('init-tmp');
    });

    it('is off by default', async () => {
      const r = await renderSet('defaults');
      expect(findAll(r, 'Deployment')).toEqual([]);
      expect(r.objects.filter((o) => o.metadata.name.includes('inference'))).toEqual([]);
    });

    it('refuses to render without a way to reach the node daemon or without an image tag', async () => {
      expect(await renderError(['inference.yaml'], ['daemon.hostPort=0'])).toMatch(/hostPort or daemon\.hostNetwork/);
      expect(await renderError([], ['inference.enabled=true'])).toMatch(/inference\.image\.tag is required/);
    });

    it('uses replicaCount unless the HPA owns the replica count', async () => {
      expect((inference(await renderSet('inference-shared')).dep.spec as { replicas?: number }).replicas).toBe(3);
      expect((inference(await renderSet('inference-cpu')).dep.spec as { replicas?: number }).replicas).toBeUndefined();
    });
  });

  describe('mode mirror', () => {
    it('mounts no store, runs no wait, and points the hub clients at the node daemon', async () => {
      const r = await renderSet('inference-mirror');
      const { spec, main } = inference(r);
      expect(spec.initContainers).toBeUndefined();
      expect(spec.volumes!.map((v) => v.name).sort()).toEqual(['model-cache', 'shm']);
      expect(spec.volumes!.find((v) => v.name === 'model-cache')!.emptyDir).toEqual({ sizeLimit: '40Gi' });
      expect(JSON.stringify(spec)).not.toContain('/var/lib/swift-fetch/store');
      expect(main.env!.map((e) => e.name)).not.toContain('HF_HUB_OFFLINE');
      // What the kubelet hands the container on a node at 10.0.0.7, $(HOST_IP) expanded in order.
      const facts = { hostIP: '10.0.0.7', podIP: '10.1.2.3', nodeName: 'gpu-1', podName: 'p', namespace: NAMESPACE };
      const env = Object.fromEntries(resolveEnv(main, { entrypoint: [], cmd: [], env: [], workdir: '/', home: '/root' }, [{ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'hf-token' }, data: { token: 'dA==' } }], facts));
      const ds = podSpec(find(r, 'DaemonSet')).containers[0]!.ports![0]!;
      expect(env.HF_ENDPOINT).toBe(`http://10.0.0.7:${ds.hostPort}/hf`);
      expect(env.MODELSCOPE_ENDPOINT).toBe(`http://10.0.0.7:${ds.hostPort}/ms`);
      expect(env.HF_HOME!.startsWith('/cache/')).toBe(true);
      expect(main.volumeMounts!.find((m) => m.name === 'model-cache')!.mountPath).toBe('/cache');
      // The mirror hands gated bytes only to clients whose own token the hub accepts.
      expect(main.env!.find((e) => e.name === 'HF_TOKEN')!.valueFrom).toEqual({ secretKeyRef: { name: 'hf-token', key: 'token', optional: false } });
      expect(main.command).toEqual(['swift', 'deploy', '--model', 'Qwen/Qwen2.5-7B-Instruct', '--use_hf', 'true', '--model_revision', 'main', '--port', '8000']);
      expect(main.args).toEqual(['--infer_backend', 'vllm', '--vllm_tensor_parallel_size', '4']);
      expect(YAML.parse(configMapFiles(r).config).mirror).toBe(true);
      // No placement on store labels: the pod does not read the store.
      expect(spec as { affinity?: unknown }).not.toHaveProperty('affinity');
    });

    it('renders the daemon mirror by itself too, with an allow list', async () => {
      const r = await render([], ['daemon.mirror.enabled=true', 'daemon.mirror.allow={hf://Qwen/*}']);
      expect(YAML.parse(configMapFiles(r).config).mirror).toEqual({ allow: ['hf://Qwen/*'] });
      expect(YAML.parse(configMapFiles(await renderSet('inference')).config).mirror).toBeUndefined();
    });

    it('passes a ModelScope model without --use_hf and without a revision it was not given', async () => {
      const { main } = await renderInference(['inference.mode=mirror', 'inference.model=Qwen/Qwen2.5-0.5B-Instruct']);
      expect(main.command).toEqual(['swift', 'deploy', '--model', 'Qwen/Qwen2.5-0.5B-Instruct', '--port', '8000']);
    });
  });

  describe('accelerators', () => {
    it('nvidia: nvidia.com/gpu, the GPU node label and taint', async () => {
      const { spec, main } = inference(await renderSet('inference'));
      expect(main.resources?.limits?.['nvidia.com/gpu']).toBe(2);
      expect(spec.nodeSelector).toEqual({ 'nvidia.com/gpu.present': 'true' });
      expect(spec.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    });

    it('ascend: huawei.com/Ascend910 on the NPU nodes, daemons there too, nothing NVIDIA', async () => {
      const r = await renderSet('inference-ascend');
      const i = inference(r);
      expect(i.main.resources?.limits).toEqual({ 'huawei.com/Ascend910': 2 });
      expect(i.spec.nodeSelector).toEqual({ accelerator: 'huawei-Ascend910' });
      expect(i.spec.tolerations).toEqual([{ key: 'huawei.com/Ascend910', operator: 'Exists', effect: 'NoSchedule' }]);
      expect(depJson(i)).not.toMatch(/nvidia|cuda/i);
      const ds = podSpec(find(r, 'DaemonSet'));
      expect(ds.nodeSelector).toEqual({ accelerator: 'huawei-Ascend910' });
      expect(ds.tolerations).toEqual(i.spec.tolerations);
    });

    it('cpu: no device, no GPU node selection or toleration, no tensor parallel flag, nothing CUDA-specific', async () => {
      const r = await renderSet('inference-cpu');
      const i = inference(r);
      expect(i.main.resources).toEqual({ requests: { cpu: '8', memory: '16Gi' }, limits: { memory: '16Gi' } });
      expect(i.spec.nodeSelector).toBeUndefined();
      expect(i.spec.tolerations).toBeUndefined();
      expect(i.main.args).toEqual(['--infer_backend', 'pt']);
      expect(depJson(i)).not.toMatch(/nvidia|cuda|ascend/i);
      expect(podSpec(find(r, 'DaemonSet')).nodeSelector).toBeUndefined();
    });

    it.each([
      ['inference-mig', 'nvidia.com/mig-1g.10gb'],
      ['inference-shared', 'nvidia.com/gpu.shared'],
    ])('%s: gpuResource replaces the whole-GPU resource (%s)', async (set, resource) => {
      const i = inference(await renderSet(set));
      expect(i.main.resources?.limits).toEqual({ [resource]: 1 });
      expect(Object.keys(i.main.resources!.limits!)).not.toContain('nvidia.com/gpu');
      expect(i.spec.tolerations).toContainEqual({ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' });
    });

    it('takes extra node labels and tolerations on top of the accelerator preset', async () => {
      const { spec } = await renderInference(['inference.nodeSelector.nvidia\\.com/gpu\\.product=NVIDIA-H100-80GB-HBM3', 'inference.tolerations[0].key=dedicated', 'inference.tolerations[0].operator=Exists']);
      expect(spec.nodeSelector).toEqual({ 'nvidia.com/gpu.present': 'true', 'nvidia.com/gpu.product': 'NVIDIA-H100-80GB-HBM3' });
      expect(spec.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }, { key: 'dedicated', operator: 'Exists' }]);
    });

    it.each([
      ['vllm', 4, ['--vllm_tensor_parallel_size', '4']],
      ['sglang', 4, ['--sglang_tp_size', '4']],
      ['lmdeploy', 4, ['--lmdeploy_tp', '4']],
      ['pt', 4, []],
    ] as const)('%s on %i GPUs: tensor parallel size = GPUs', async (backend, gpus, tp) => {
      const { main } = await renderInference([`inference.inferBackend=${backend}`, `inference.gpus=${gpus}`]);
      expect(main.args).toEqual(['--infer_backend', backend, ...tp]);
      expect(main.resources?.limits).toEqual({ 'nvidia.com/gpu': gpus });
    });

    it('lets tensorParallelSize differ from the GPU count', async () => {
      const { main } = await renderInference(['inference.gpus=4', 'inference.tensorParallelSize=2']);
      expect(main.args).toEqual(['--infer_backend', 'vllm', '--vllm_tensor_parallel_size', '2']);
    });

    it('refuses what cannot work: TP over MIG slices, a driver check off NVIDIA, pods on nodes without a daemon', async () => {
      expect(await renderError(['inference-mig.yaml'], ['inference.gpus=2'])).toMatch(/tensor parallelism over 2 MIG devices/);
      expect(await renderError(['inference-ascend.yaml'], ['inference.driverCheck.minVersion=535.104.05'])).toMatch(/accelerator nvidia only/);
      // Ascend pods while the daemons stay on the NVIDIA nodes: init would wait forever.
      const err = await renderError([], [...BASE, 'inference.accelerator=ascend']);
      expect(err).toMatch(/inference pods would run on nodes without a daemon: the daemon's nodeSelector nvidia\.com\/gpu\.present=true/);
      expect(await renderError([], [...BASE, 'inference.accelerator=tpu'])).toMatch(/accelerator/);
      expect(await renderError([], [...BASE, 'inference.inferBackend=tgi'])).toMatch(/inferBackend/);
    });
  });

  describe('driver check', () => {
    it('runs first, on the pod\'s own GPUs, only when a minimum is set', async () => {
      const i = inference(await renderSet('inference-mig'));
      expect(i.spec.initContainers!.map((c) => c.name)).toEqual(['driver-check', 'wait-for-model']);
      const check = i.init('driver-check')!;
      expect(check.image).toBe(i.main.image);
      expect(check.command?.slice(0, 2)).toEqual(['sh', '-c']);
      expect(check.command?.slice(3)).toEqual(['driver-check', '535.104.05']);
      expect(check.resources?.limits).toMatchObject(i.main.resources!.limits!);
      expect((i.spec as { runtimeClassName?: string }).runtimeClassName).toBe('nvidia');
      expect(inference(await renderSet('inference')).init('driver-check')).toBeUndefined();
      expect(await renderError([], [...BASE, 'inference.driverCheck.minVersion=535.x'])).toMatch(/minVersion/);
    });
  });

  describe('Service', () => {
    const svc = async (set: string) => find(await renderSet(set), 'Service', '-inference').spec as Record<string, any>;

    it('defaults to ClusterIP on the pods\' http port', async () => {
      const r = await renderSet('inference');
      const spec = find(r, 'Service', '-inference').spec as Record<string, any>;
      expect(spec.type).toBe('ClusterIP');
      expect(spec.ports).toEqual([{ name: 'http', port: 8000, targetPort: 'http', protocol: 'TCP' }]);
      expect(podTemplate(find(r, 'Deployment', '-inference')).metadata.labels).toMatchObject(spec.selector);
      expect(inference(r).main.ports).toContainEqual({ name: 'http', containerPort: 8000, protocol: 'TCP' });
    });

    it('NodePort with a fixed node port', async () => {
      const spec = await svc('inference-ascend');
      expect(spec.type).toBe('NodePort');
      expect(spec.ports[0].nodePort).toBe(30800);
    });

    it('LoadBalancer with annotations and source ranges', async () => {
      const r = await renderSet('inference-cpu');
      const s = find(r, 'Service', '-inference');
      expect((s.spec as Record<string, any>).type).toBe('LoadBalancer');
      expect((s.spec as Record<string, any>).loadBalancerSourceRanges).toEqual(['10.0.0.0/8']);
      expect(s.metadata.annotations).toEqual({ 'service.beta.kubernetes.io/aws-load-balancer-internal': 'true' });
    });

    it('refuses a node port on a ClusterIP Service and an unknown type', async () => {
      expect(await renderError([], [...BASE, 'inference.service.nodePort=30000'])).toMatch(/nodePort needs inference\.service\.type NodePort or LoadBalancer/);
      expect(await renderError([], [...BASE, 'inference.service.type=ExternalName'])).toMatch(/type/);
    });
  });

  describe('Ingress', () => {
    it('routes each host and path to the Service, with TLS, the class and the auth/streaming annotations', async () => {
      const r = await renderSet('inference-mig');
      const ing = find(r, 'Ingress');
      const spec = ing.spec as Record<string, any>;
      expect(spec.ingressClassName).toBe('nginx');
      expect(spec.tls).toEqual([{ secretName: 'llm-example-com-tls', hosts: ['llm.example.com'] }]);
      const svc = find(r, 'Service', '-inference');
      expect(spec.rules).toEqual([
        { host: 'llm.example.com', http: { paths: [{ path: '/v1', pathType: 'Prefix', backend: { service: { name: svc.metadata.name, port: { name: 'http' } } } }] } },
      ]);
      expect((svc.spec as Record<string, any>).ports.map((p: { name: string }) => p.name)).toContain('http');
      expect(ing.metadata.annotations).toMatchObject({
        'nginx.ingress.kubernetes.io/auth-type': 'basic',
        'nginx.ingress.kubernetes.io/auth-secret': 'inference-basic-auth',
        'nginx.ingress.kubernetes.io/proxy-read-timeout': '3600',
        'nginx.ingress.kubernetes.io/proxy-buffering': 'off',
      });
    });

    it('is off by default and needs the Service', async () => {
      expect(findAll(await renderSet('inference'), 'Ingress')).toEqual([]);
      expect(await renderError(['inference-mig.yaml'], ['inference.service.enabled=false'])).toMatch(/ingress needs inference\.service\.enabled/);
    });
  });

  describe('autoscaling', () => {
    it('scales the Deployment on CPU and memory utilisation (autoscaling/v2)', async () => {
      const r = await renderSet('inference-cpu');
      const hpa = find(r, 'HorizontalPodAutoscaler');
      expect(hpa.apiVersion).toBe('autoscaling/v2');
      const spec = hpa.spec as Record<string, any>;
      expect(spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: `${FULL}-inference` });
      expect(find(r, 'Deployment', '-inference').metadata.name).toBe(spec.scaleTargetRef.name);
      expect([spec.minReplicas, spec.maxReplicas]).toEqual([2, 6]);
      expect(spec.metrics).toEqual([
        { type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 70 } } },
        { type: 'Resource', resource: { name: 'memory', target: { type: 'Utilization', averageUtilization: 80 } } },
      ]);
      expect(spec.behavior.scaleDown.stabilizationWindowSeconds).toBe(600);
    });

    it('scales on requests per second from prometheus-adapter (a Pods metric)', async () => {
      const spec = find(await renderSet('inference-mig'), 'HorizontalPodAutoscaler').spec as Record<string, any>;
      expect(spec.metrics).toEqual([{ type: 'Pods', pods: { metric: { name: 'vllm_requests_per_second' }, target: { type: 'AverageValue', averageValue: '5' } } }]);
    });

    it('refuses an HPA that cannot compute: no metric, utilisation without requests, min above max', async () => {
      const on = [...BASE, 'inference.autoscaling.enabled=true'];
      expect(await renderError([], on)).toMatch(/targetCPUUtilizationPercentage needs inference\.resources\.requests\.cpu/);
      expect(await renderError([], [...on, 'inference.autoscaling.targetCPUUtilizationPercentage=null'])).toMatch(/needs a metric/);
      expect(await renderError(['inference-cpu.yaml'], ['inference.autoscaling.minReplicas=9'])).toMatch(/minReplicas is above maxReplicas/);
      expect(findAll(await renderSet('inference'), 'HorizontalPodAutoscaler')).toEqual([]);
    });
  });

  describe('disruption budget and spread', () => {
    it('keeps voluntary disruptions to one pod at a time by default, selecting exactly the inference pods', async () => {
      const r = await renderSet('inference');
      const pdb = find(r, 'PodDisruptionBudget');
      expect(pdb.apiVersion).toBe('policy/v1');
      const spec = pdb.spec as Record<string, any>;
      expect(spec.maxUnavailable).toBe(1);
      expect(spec.minAvailable).toBeUndefined();
      expect(spec.selector.matchLabels).toEqual((find(r, 'Deployment', '-inference').spec as Record<string, any>).selector.matchLabels);
      expect((find(await renderSet('inference-mig'), 'PodDisruptionBudget').spec as Record<string, any>).minAvailable).toBe(1);
      expect(findAll(await renderSet('inference-shared'), 'PodDisruptionBudget')).toEqual([]);
    });

    it('spreads pods over nodes, filling in the pods\' own labels as the selector', async () => {
      const r = await renderSet('inference');
      const spec = podSpec(find(r, 'Deployment', '-inference')) as PodSpec & { topologySpreadConstraints: Array<Record<string, any>> };
      expect(spec.topologySpreadConstraints).toEqual([
        { maxSkew: 1, topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'ScheduleAnyway', labelSelector: { matchLabels: (find(r, 'Deployment', '-inference').spec as Record<string, any>).selector.matchLabels } },
      ]);
      const own = podSpec(find(await render([], [...BASE, 'inference.topologySpreadConstraints[0].maxSkew=2', 'inference.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone', 'inference.topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule', 'inference.topologySpreadConstraints[0].labelSelector.matchLabels.team=ml']), 'Deployment', '-inference')) as PodSpec & { topologySpreadConstraints: Array<Record<string, any>> };
      expect(own.topologySpreadConstraints).toEqual([{ maxSkew: 2, topologyKey: 'topology.kubernetes.io/zone', whenUnsatisfiable: 'DoNotSchedule', labelSelector: { matchLabels: { team: 'ml' } } }]);
    });
  });

  describe('placement on the nodes that hold the model (mode init)', () => {
    const label = (ref: string) => `models.swift-fetch.io/${createHash('sha256').update(formatRef(parseRef(ref, {}))).digest('hex').slice(0, 16)}`;
    type Affinity = { nodeAffinity?: Record<string, any> } | undefined;
    const affinity = (i: Inference) => (i.spec as { affinity?: Affinity }).affinity;

    it('prefers them by default', async () => {
      const i = inference(await renderSet('inference'));
      expect(affinity(i)).toEqual({
        nodeAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 100, preference: { matchExpressions: [{ key: label('ms://Qwen/Qwen2.5-7B-Instruct'), operator: 'In', values: ['ready'] }] } }] },
      });
    });

    it('requires them in every node selector term, keeping the user\'s own affinity', async () => {
      const ascend = affinity(inference(await renderSet('inference-ascend')));
      expect(ascend!.nodeAffinity!.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([
        { matchExpressions: [{ key: label('ms://Qwen/Qwen2.5-7B-Instruct'), operator: 'In', values: ['ready'] }] },
      ]);
      const own = {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [
              { matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }] },
              { matchExpressions: [{ key: 'zone', operator: 'In', values: ['b'] }] },
            ],
          },
          preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 5, preference: { matchExpressions: [{ key: 'ssd', operator: 'Exists' }] } }],
        },
        podAntiAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [] },
      };
      const withOwn = inference(await renderWithAffinity(own, 'required'));
      const expr = { key: label('ms://Qwen/Qwen2.5-0.5B-Instruct'), operator: 'In', values: ['ready'] };
      expect(affinity(withOwn)).toEqual({
        ...own,
        nodeAffinity: {
          ...own.nodeAffinity,
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: own.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.map((t) => ({ matchExpressions: [...t.matchExpressions, expr] })),
          },
        },
      });
      const preferred = inference(await renderWithAffinity(own, 'preferred'));
      expect(affinity(preferred)!.nodeAffinity!.preferredDuringSchedulingIgnoredDuringExecution).toEqual([
        ...own.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution,
        { weight: 100, preference: { matchExpressions: [expr] } },
      ]);
    });

    it('adds nothing with placement none', async () => {
      expect(affinity(inference(await renderSet('inference-shared')))).toBeUndefined();
    });

    it.each([
      'hf://Qwen/Qwen2.5-0.5B-Instruct',
      'ms://Qwen/Qwen2.5-7B-Instruct',
      'modelscope://Qwen/Qwen2.5-7B-Instruct',
      'Qwen/Qwen2.5-7B-Instruct',
      'ms://Qwen/Qwen2.5-7B-Instruct@v1.0.0',
      'hf://meta-llama/Llama-3.2-1B@refs/pr/12',
      'hf://org/name@0123456789abcdef0123456789abcdef01234567',
      'ms://AI-ModelScope/bge_large.zh@master',
      'huggingface://Qwen/Qwen2.5-0.5B-Instruct',
    ])('labels %s with the key and hash the daemon computes (formatRef(parseRef()) + sha256)', async (ref) => {
      const i = await renderInference([`inference.model=${ref}`, 'inference.placement=required']);
      const key = formatRef(parseRef(ref, {}));
      expect(podTemplate(i.dep).metadata.annotations?.['swift-fetch/model-key']).toBe(key);
      const terms = affinity(i)!.nodeAffinity!.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms;
      expect(terms[0].matchExpressions[0].key).toBe(label(ref));
      expect(label(ref)).toMatch(/^models\.swift-fetch\.io\/[0-9a-f]{16}$/);
    });

    it('refuses a ref the daemon would refuse', async () => {
      expect(await renderError([], [...BASE, 'inference.model=s3://bucket/prefix'])).toMatch(/model/);
    });
  });

  describe('helm test of the OpenAI API', () => {
    let server: Server;
    let answer = '';
    let url = '';
    beforeAll(async () => {
      server = createServer((req, res) => {
        if (req.url !== '/v1/models') return void res.writeHead(404).end();
        res.writeHead(200, { 'content-type': 'application/json' }).end(answer);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(server.address() as { port: number }).port}/v1/models`;
    });
    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    const testPod = (r: Rendered) => r.objects.find((o) => o.kind === 'Pod' && o.metadata.name.endsWith('-test-inference'));

    it('calls /v1/models on the inference Service', async () => {
      const pod = testPod(await renderSet('inference'))!;
      expect(pod.metadata.annotations?.['helm.sh/hook']).toBe('test');
      const c = podSpec(pod).containers[0]!;
      expect(c.command!.slice(0, 2)).toEqual(['sh', '-c']);
      expect(c.command!.slice(3)).toEqual([`http://${FULL}-inference.${NAMESPACE}.svc.cluster.local:8000/v1/models`, 'qwen']);
      expect(testPod(await renderSet('defaults'))).toBeUndefined();
      expect(testPod(await render(['inference.yaml'], ['inference.service.enabled=false']))).toBeUndefined();
    });

    it.each([
      ['a model list naming the served model', '{"object":"list","data":[{"id":"qwen","object":"model"}]}', 'qwen', 0],
      ['a model list when no name is required', '{"object":"list","data":[{"id":"Qwen2.5-7B-Instruct"}]}', '', 0],
      ['a list without the served model', '{"object":"list","data":[{"id":"other"}]}', 'qwen', 1],
      ['an answer that is no model list', '{"status":"ok"}', '', 1],
    ])('its script passes only on %s', async (_what, body, served, code) => {
      answer = body;
      const c = podSpec(testPod(await renderSet('inference'))!).containers[0]!;
      // The rendered script, run by sh with curl as in the curl image, against a real server.
      const run = promisify(execFile)('sh', ['-c', c.command![2]!, url, served]);
      if (code === 0) await expect(run).resolves.toBeDefined();
      else await expect(run).rejects.toMatchObject({ code });
    });
  });
});

/** A render with `inference.affinity` from a values file (nested lists do not fit --set well). */
async function renderWithAffinity(affinity: object, placement: string): Promise<Rendered> {
  const file = join(await tmpDir('sf-affinity-'), 'values.yaml');
  await writeFile(file, YAML.stringify({ inference: { enabled: true, image: { tag: 'test' }, placement, affinity } }));
  return render([file]);
}
