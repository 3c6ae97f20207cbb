/**
 * Property: POST /v1/pulls on a real daemon HTTP server (in process, the scripted pull of the API
 * tests standing in for the network) answers any body with 202 for a valid reference and a clean
 * 4xx otherwise: never a 500, never a crash, and it accepts only references parseRef accepts.
 */
import { join } from 'node:path';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRef } from '../../src/core/ref.js';
import { parseConfig } from '../../src/daemon/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/index.js';
import { fakePull } from '../daemon/fake-pull.js';
import { tempDir } from '../daemon/helpers.js';
import { FUZZ_RUNS_IO, fuzzParams } from './config.js';

let daemon: Daemon;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  const t = await tempDir('sf-fuzz-api-');
  cleanup = t.cleanup;
  const cfg = parseConfig(`store: ${join(t.dir, 'store')}\nstateDir: ${join(t.dir, 'state')}\nlisten: 127.0.0.1:0\nmodels: []\n`, join(t.dir, 'config.yaml'));
  daemon = await startDaemon(cfg, { pull: fakePull().pull, logger: pino({ level: 'silent' }), resyncMs: 0, storeSyncMs: 0 });
});
afterAll(async () => {
  await daemon?.stop();
  await cleanup?.();
});

const name = fc.oneof({ arbitrary: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,12}$/), weight: 3 }, { arbitrary: fc.string({ maxLength: 16 }), weight: 1 });
const ref = fc.oneof(
  { arbitrary: fc.tuple(fc.constantFrom('hf://', 'ms://', '', 's3://', 'x://'), name, name, fc.option(name, { nil: undefined })).map(([s, o, n, r]) => `${s}${o}/${n}${r ? `@${r}` : ''}`), weight: 4 },
  { arbitrary: fc.string({ maxLength: 60 }), weight: 1 },
);
const globs = fc.array(fc.oneof(fc.string({ maxLength: 20 }), fc.constant('*'.repeat(2000)), fc.integer()), { maxLength: 3 });
const body = fc.oneof(
  { arbitrary: fc.record({ ref, include: globs, exclude: globs }, { requiredKeys: ['ref'] }).map((o) => JSON.stringify(o)), weight: 4 },
  { arbitrary: fc.record({ ref: fc.jsonValue(), revision: fc.jsonValue(), extra: fc.jsonValue() }, { requiredKeys: [] }).map((o) => JSON.stringify(o)), weight: 1 },
  { arbitrary: fc.jsonValue().map((v) => JSON.stringify(v)), weight: 1 },
  { arbitrary: fc.string({ maxLength: 200 }), weight: 1 },
  { arbitrary: fc.constant('{"ref": "' + 'a'.repeat(70_000) + '"}'), weight: 1 },
);
const contentType = fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', undefined);

describe('fuzz: POST /v1/pulls', () => {
  it(`answers 202 for valid references and a clean 4xx otherwise (${FUZZ_RUNS_IO} cases)`, async () => {
    const seen = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(body, contentType, async (text, type) => {
        const res = await fetch(`${daemon.url}/v1/pulls`, { method: 'POST', headers: type ? { 'content-type': type } : {}, body: text });
        const answer = await res.text();
        seen.set(res.status, (seen.get(res.status) ?? 0) + 1);
        expect([202, 400, 413, 415, 429]).toContain(res.status);
        const json = JSON.parse(answer) as { ref?: string; error?: string };
        if (res.status === 202) {
          expect(() => parseRef(JSON.parse(text).ref, {})).not.toThrow();
          expect(typeof json.ref).toBe('string');
        } else {
          expect(typeof json.error).toBe('string');
          expect(json.error!.length).toBeLessThan(2_000);
        }
      }),
      fuzzParams(FUZZ_RUNS_IO),
    );
    // Both sides were reached, and the node is still well.
    expect(seen.get(202) ?? 0).toBeGreaterThan(0);
    expect(seen.get(400) ?? 0).toBeGreaterThan(0);
    expect((await fetch(`${daemon.url}/healthz`)).status).toBe(200);
  });
});
