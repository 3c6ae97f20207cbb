import type { Dispatcher } from 'undici';
import type { Hub } from '../core/ref.js';
import { HuggingFaceSource, hfSettings } from './huggingface.js';
import { ModelScopeSource, msSettings } from './modelscope.js';
import { S3Client } from '../s3/client.js';
import { s3Settings } from '../s3/settings.js';
import { S3Source } from '../s3/source.js';
import type { Source, SourceHooks } from './source.js';

export type { Source, SourceHooks } from './source.js';
export type { ApiRetry } from './http.js';
export { hfSettings } from './huggingface.js';
export { msSettings } from './modelscope.js';

/** The adapter for a hub, configured from that hub's own environment variables; API calls go through `dispatcher`. */
export function sourceFor(hub: Hub, env: NodeJS.ProcessEnv, dispatcher: Dispatcher, hooks: SourceHooks = {}): Source {
  if (hub === 's3') return new S3Source(new S3Client(s3Settings(env), dispatcher));
  return hub === 'hf' ? new HuggingFaceSource(hfSettings(env), dispatcher, hooks) : new ModelScopeSource(msSettings(env), dispatcher, hooks);
}
