/**
 * The driver-check init container's script (chart/swift-fetch/scripts/driver-check.sh), taken
 * from the rendered Deployment and run by sh exactly as the container runs it, with a fake
 * `nvidia-smi` on PATH that prints the driver versions a node would have.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { tmpDir } from '../support/index.js';
import { find, helmPath, podSpec, renderSet, requireTool } from './support.js';

const runs = requireTool('helm', helmPath, 'HELM_BIN');

// Answers only the query the script must make, like nvidia-smi would (one line per GPU).
const FAKE = `#!/bin/sh
[ "$*" = "--query-gpu=driver_version --format=csv,noheader" ] || { echo "fake nvidia-smi: unexpected arguments: $*" >&2; exit 2; }
if [ -n "\${FAKE_SMI_FAIL:-}" ]; then echo "$FAKE_SMI_FAIL"; exit 9; fi
printf '%s\\n' $FAKE_DRIVER_VERSIONS
`;

describe.skipIf(!runs)('driver check script', () => {
  let argv: string[];
  let withSmi: string;
  let withoutSmi: string;

  beforeAll(async () => {
    const spec = podSpec(find(await renderSet('inference-mig'), 'Deployment', '-inference'));
    argv = spec.initContainers!.find((c) => c.name === 'driver-check')!.command!;
    const dir = await tmpDir('sf-driver-check-');
    withSmi = join(dir, 'bin');
    withoutSmi = join(dir, 'empty');
    await mkdir(withSmi);
    await mkdir(withoutSmi);
    await writeFile(join(withSmi, 'nvidia-smi'), FAKE);
    await chmod(join(withSmi, 'nvidia-smi'), 0o755);
  });

  async function check(env: Record<string, string>, min?: string): Promise<{ code: number; out: string }> {
    // The rendered argv: sh -c SCRIPT driver-check MIN (the minimum from the values, or another one).
    const args = [...argv.slice(1)];
    if (min) args[args.length - 1] = min;
    try {
      const r = await promisify(execFile)('/bin/sh', args, { env });
      return { code: 0, out: r.stdout + r.stderr };
    } catch (e) {
      const err = e as { code: number; stdout: string; stderr: string };
      return { code: err.code, out: err.stdout + err.stderr };
    }
  }

  it('is rendered with the minimum from the values', () => {
    expect(argv.slice(0, 2)).toEqual(['sh', '-c']);
    expect(argv.at(-1)).toBe('535.104.05');
  });

  it.each([
    ['an older major', '470.82.01', 1],
    ['an older minor', '535.86.10', 1],
    ['the same version', '535.104.05', 0],
    ['the same version written without the leading zero', '535.104.5', 0],
    ['a newer patch', '535.104.12', 0],
    ['a newer minor with fewer digits', '535.129.03', 0],
    ['a newer major', '550.54.15', 0],
    ['one old GPU among new ones', '550.54.15 470.82.01', 1],
  ])('%s (%s against 535.104.05) exits %i', async (_what, versions, code) => {
    const r = await check({ PATH: withSmi, FAKE_DRIVER_VERSIONS: versions });
    expect(r.code, r.out).toBe(code);
    if (code === 0) expect(r.out).toContain('>= 535.104.05');
    else expect(r.out).toMatch(new RegExp(`driver check: NVIDIA driver .*${versions.split(' ').at(-1)!.replace(/\./g, '\\.')} is older than the required 535\\.104\\.05 \\(inference\\.driverCheck\\.minVersion\\)`));
  });

  it('compares field by field, not as text or as one number', async () => {
    expect((await check({ PATH: withSmi, FAKE_DRIVER_VERSIONS: '535.9' }, '535.10')).code).toBe(1);
    expect((await check({ PATH: withSmi, FAKE_DRIVER_VERSIONS: '535.10' }, '535.9')).code).toBe(0);
    expect((await check({ PATH: withSmi, FAKE_DRIVER_VERSIONS: '550' }, '535.104.05')).code).toBe(0);
    expect((await check({ PATH: withSmi, FAKE_DRIVER_VERSIONS: '535' }, '535.0.1')).code).toBe(1);
  });

  it('fails with a clear message when nvidia-smi is missing', async () => {
    const r = await check({ PATH: withoutSmi });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/driver check: nvidia-smi is not in this container/);
  });

  it('fails with nvidia-smi\'s own words when it cannot talk to the driver, or prints nonsense', async () => {
    const failed = await check({ PATH: withSmi, FAKE_SMI_FAIL: 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.' });
    expect(failed.code).toBe(1);
    expect(failed.out).toMatch(/driver check: nvidia-smi failed: NVIDIA-SMI has failed because it could not communicate/);
    const odd = await check({ PATH: withSmi, FAKE_DRIVER_VERSIONS: '[N/A]' });
    expect(odd.code).toBe(1);
    expect(odd.out).toMatch(/unexpected driver version '\[N\/A\]'/);
    const none = await check({ PATH: withSmi, FAKE_DRIVER_VERSIONS: '' });
    expect(none.code).toBe(1);
    expect(none.out).toMatch(/listed no GPU/);
  });
});
