/**
 * The API examples in README.md and docs/daemon.md run as written against a real daemon: every
 * `curl` line of their code blocks, with only the daemon's address changed (the fake hub serves the
 * Qwen repos the examples name, so nothing leaves the machine).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { hubEnv } from '../bundle/helpers.js';
import { startFakeHub, type FakeHub } from '../fakehub/index.js';
import { repoRoot, run, tmpDir } from '../support/index.js';
import { toolMissing } from '../support/tools.js';

/** `curl` command lines inside the fenced code blocks of a markdown file (a leading `$ ` dropped). */
function curlExamples(file: string): string[] {
  const text = readFileSync(join(repoRoot, file), 'utf8');
  const blocks = [...text.matchAll(/```[a-z]*\n([\s\S]*?)```/g)].map((m) => m[1]!);
  return blocks.flatMap((b) => b.split('\n')).map((l) => l.replace(/^\$ /, '')).filter((l) => l.startsWith('curl '));
}

const CURL_MISSING = toolMissing('curl', 'to run the documented API examples');

describe.skipIf(CURL_MISSING)('documented API examples (skipped without curl)', () => {
  let hub: FakeHub;
  let daemon: Daemon;
  beforeAll(async () => {
    hub = await startFakeHub();
    for (const id of ['Qwen/Qwen2.5-0.5B-Instruct', 'Qwen/Qwen2.5-1.5B-Instruct']) {
      await hub.addRepo({ id, files: { 'config.json': JSON.stringify({ model_type: 'qwen2', id }), 'model.safetensors': Buffer.alloc(300_000, 7) } });
    }
    const dir = await tmpDir();
    const env = { ...process.env } as NodeJS.ProcessEnv;
    for (const [k, v] of Object.entries(hubEnv(hub))) if (v === undefined) delete env[k]; else env[k] = v;
    const config = parseConfig(`store: ${join(dir, 'store')}\nstateDir: ${join(dir, 'state')}\nlisten: 127.0.0.1:0\n`, join(dir, 'c.yaml'), { env });
    daemon = await startDaemon(config, { env, logger: pino({ level: 'silent' }), resyncMs: 0 });
  });
  afterAll(async () => {
    await daemon?.stop();
    await hub?.close();
  });

  it.each([['README.md'], ['docs/daemon.md']])('%s: every curl example gets a 2xx answer, not an error', async (file) => {
    const examples = curlExamples(file);
    expect(examples.length).toBeGreaterThan(0);
    const address = daemon.url.replace(/^http:\/\//, '');
    for (const example of examples) {
      const line = example.replaceAll('localhost:7070', address);
      // As written, plus what reports the status: curl's own output stays on stdout, unchanged.
      const r = await run('bash', ['-c', `${line} -w '\\n%{http_code}'`], { timeoutMs: 60_000 });
      expect(r.code, `${example}\n${r.stderr}`).toBe(0);
      const out = r.stdout.trimEnd().split('\n');
      const status = Number(out.pop());
      expect(status, `${example}\n${out.join('\n')}`).toBeGreaterThanOrEqual(200);
      expect(status, `${example}\n${out.join('\n')}`).toBeLessThan(300);
      if (line.includes('/events')) expect(out.join('\n')).toMatch(/^event: ready$/m);
    }
  });
});
