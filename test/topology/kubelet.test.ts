/**
 * The topology harness's model of the kubelet (kubelet.ts), against the kubelet's documented
 * behaviour: `$(VAR)` expansion, ENTRYPOINT/CMD versus command/args, env sources and the
 * security context. The pod-topology test is only as honest as these rules.
 */
import { describe, expect, it } from 'vitest';
import type { Container, K8sObject, PodSpec } from '../chart/support.js';
import { expandVars, planContainer, resolveArgv, resolveEnv, type ImageConfig, type PodFacts } from './kubelet.js';

const image: ImageConfig = { entrypoint: ['swift-fetch'], cmd: ['--help'], env: [['PATH', '/usr/bin'], ['MODE', 'image']], user: { uid: 10001, gid: 10001 }, workdir: '/app', home: '/var/lib/x' };
const facts: PodFacts = { hostIP: '10.0.0.7', podIP: '10.1.0.9', nodeName: 'gpu-1', podName: 'p-1', namespace: 'models' };
const lookup = (vars: Record<string, string>) => (n: string) => vars[n];

describe('kubelet model', () => {
  it('expands $(VAR) like the kubelet: known names, unknown kept verbatim, $$ escapes', () => {
    expect(expandVars('http://$(HOST_IP):7070', lookup({ HOST_IP: '10.0.0.7' }))).toBe('http://10.0.0.7:7070');
    expect(expandVars('$(NOPE)/x', lookup({}))).toBe('$(NOPE)/x');
    expect(expandVars('$$(HOST_IP) $$ $x $', lookup({ HOST_IP: 'a' }))).toBe('$(HOST_IP) $ $x $');
    expect(expandVars('$(UNCLOSED', lookup({ UNCLOSED: 'a' }))).toBe('$(UNCLOSED');
  });

  it('combines ENTRYPOINT/CMD with command/args', () => {
    const env: Array<[string, string]> = [['A', '1']];
    expect(resolveArgv({ name: 'c', image: 'i' }, image, env)).toEqual(['swift-fetch', '--help']);
    expect(resolveArgv({ name: 'c', image: 'i', args: ['init', '$(A)'] }, image, env)).toEqual(['swift-fetch', 'init', '1']);
    expect(resolveArgv({ name: 'c', image: 'i', command: ['sh', '-c'] }, image, env)).toEqual(['sh', '-c']);
    expect(resolveArgv({ name: 'c', image: 'i', command: ['sh'], args: ['$(A)'] }, image, env)).toEqual(['sh', '1']);
  });

  it('builds env from the image, the downward API, Secrets, and earlier entries', () => {
    const objects: K8sObject[] = [{ apiVersion: 'v1', kind: 'Secret', metadata: { name: 's' }, data: { k: Buffer.from('tok').toString('base64') } }];
    const c: Container = {
      name: 'c',
      image: 'i',
      env: [
        { name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
        { name: 'URL', value: 'http://$(HOST_IP):1/$(MODE)' },
        { name: 'T', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } },
        { name: 'GONE', valueFrom: { secretKeyRef: { name: 'missing', key: 'k', optional: true } } },
      ],
    };
    const env = Object.fromEntries(resolveEnv(c, image, objects, facts));
    expect(env).toEqual({ PATH: '/usr/bin', MODE: 'image', HOST_IP: '10.0.0.7', URL: 'http://10.0.0.7:1/image', T: 'tok' });
    const required: Container = { name: 'c', image: 'i', env: [{ name: 'T', valueFrom: { secretKeyRef: { name: 'missing', key: 'k' } } }] };
    expect(() => resolveEnv(required, image, objects, facts)).toThrow(/needs Secret missing/);
    const unknown: Container = { name: 'c', image: 'i', env: [{ name: 'X', valueFrom: { fieldRef: { fieldPath: 'status.hostIPs' } } }] };
    expect(() => resolveEnv(unknown, image, objects, facts)).toThrow(/does not know fieldRef/);
  });

  it('takes user, groups and capabilities from the container over the pod over the image', () => {
    const spec: PodSpec = { securityContext: { runAsUser: 5, fsGroup: 7, supplementalGroups: [8] }, containers: [], volumes: [{ name: 'v', emptyDir: {} }] };
    const plan = planContainer(spec, { name: 'c', image: 'i', securityContext: { runAsUser: 6, capabilities: { drop: ['ALL'], add: ['CHOWN'] }, allowPrivilegeEscalation: false }, volumeMounts: [{ name: 'v', mountPath: '/v' }] }, image, [], facts);
    expect(plan).toMatchObject({ uid: 6, gid: 10001, groups: [8, 7], capabilities: ['chown'], noNewPrivs: true, workdir: '/app', argv: ['swift-fetch', '--help'] });
    expect(plan.env).toContainEqual(['HOME', '/var/lib/x']);
    expect(planContainer({ containers: [] }, { name: 'c', image: 'i' }, { ...image, user: undefined }, [], facts).capabilities).toContain('net_bind_service');
    expect(() => planContainer({ securityContext: { runAsNonRoot: true, runAsUser: 0 }, containers: [] }, { name: 'c', image: 'i' }, image, [], facts)).toThrow(/runAsNonRoot/);
    expect(() => planContainer({ containers: [] }, { name: 'c', image: 'i', volumeMounts: [{ name: 'nope', mountPath: '/x' }] }, image, [], facts)).toThrow(/unknown volume/);
  });
});
