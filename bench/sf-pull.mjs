#!/usr/bin/env node
/**
 * swift-fetch's engine (built dist) pulling one file, as the benchmark runs it.
 *   node bench/sf-pull.mjs '{"url":..., "sha256":..., "size":..., "partialDir":..., "stateDir":..., "maxRate":0, "connections":16,
 *                                 "workers":2, "workerHttp":"undici"|"http"}'
 * Prints {"ok":true,"sha256":...} or {"error":...}; with "progress": true prints {"bytes": n} lines.
 */
import { fetchBlobs, RateLimiter } from '../dist/transfer/index.js';

const spec = JSON.parse(process.argv[2]);
let done = 0;
try {
  const [got] = await fetchBlobs(
    [{ key: { kind: 'sha256', sha256: spec.sha256 }, label: 'model.bin', size: spec.size, sha256: spec.sha256, origin: { url: spec.url, hubHeaders: {} } }],
    {
      partialDir: spec.partialDir,
      stateDir: spec.stateDir,
      env: {},
      ...(spec.connections ? { connections: spec.connections } : {}),
      ...(spec.maxRate ? { limiter: new RateLimiter(spec.maxRate) } : {}),
      ...(spec.fsync ? { fsync: true } : {}),
      ...(spec.workers !== undefined ? { workers: spec.workers } : {}),
      ...(spec.chunkSize ? { chunkSize: spec.chunkSize } : {}),
      ...(spec.workerHttp ? { workerHttp: spec.workerHttp } : {}),
      onEvent: spec.progress
        ? (e) => {
            if (e.type === 'progress') {
              done += e.bytes;
              process.stdout.write(JSON.stringify({ bytes: done }) + '\n');
            }
          }
        : undefined,
    },
  );
  process.stdout.write(JSON.stringify({ ok: true, sha256: got.sha256, path: got.path }) + '\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e?.message ?? e), code: e?.code }) + '\n');
  process.exitCode = e?.exitCode ?? 1;
}
