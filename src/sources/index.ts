import type { Dispatcher } from 'undici';
import type { Hub } from '../core/ref.js';
import { HuggingFaceSource, hfSettings } from './huggingface.js';
import { ModelScopeSource, msSettings } from './modelscope.js';
import type { Source, SourceHooks } from './source.js';

export type { Source, SourceHooks } from './source.js';
export type { ApiRetry } from './http.js';
export { hfSettings } from './huggingface.js';
export { msSettings } from './modelscope.js';

/**
 * The adapter for a hub, configured from that hub's own environment variables; API calls go through
 * `dispatcher`. The S3 adapter (the AWS credential chain, the signer, the XML parser) is loaded
 * only for s3:// refs: a hub pull does not pay its memory (test/cli/lazy-load.test.ts).
 */
export async function sourceFor(hub: Hub, env: NodeJS.ProcessEnv, dispatcher: Dispatcher, hooks: SourceHooks = {}): Promise<Source> {
  if (hub === 's3') {
    const [{ S3Client }, { s3Settings }, { S3Source }] = await Promise.all([import('../s3/client.js'), import('../s3/settings.js'), import('../s3/source.js')]);
    return new S3Source(new S3Client(s3Settings(env), dispatcher));
  }
  return hub === 'hf' ? new HuggingFaceSource(hfSettings(env), dispatcher, hooks) : new ModelScopeSource(msSettings(env), dispatcher, hooks);
}
