import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The org/name of the demo repo `writeDemo` creates. */
export const DEMO_REPO = 'demo/tiny-model';

const WORDS = (
  'the a an and or of to in on for with is are was be it this that model data hub file fetch pull ' +
  'store cache verify hello world swift fast small tiny token test demo offline peer node chunk range'
).split(' ');

/**
 * A word-level tokenizer in the `tokenizers` JSON format, written by hand so the demo needs no
 * Python; `transformers.AutoTokenizer` loads it through PreTrainedTokenizerFast.
 */
function tokenizerJson(): string {
  const special = ['[UNK]', '[PAD]', '[BOS]', '[EOS]'];
  const vocab: Record<string, number> = {};
  for (const w of [...special, ...WORDS]) vocab[w] ??= Object.keys(vocab).length;
  return JSON.stringify(
    {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: special.map((content, id) => ({
        id,
        content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      })),
      normalizer: { type: 'Lowercase' },
      pre_tokenizer: { type: 'Whitespace' },
      post_processor: null,
      decoder: null,
      model: { type: 'WordLevel', vocab, unk_token: '[UNK]' },
    },
    null,
    2,
  );
}

/** A valid safetensors file: u64 LE header length, JSON header padded to 8 bytes, then raw tensors. */
export function safetensors(tensors: Array<{ name: string; shape: number[]; data: Float32Array }>): Buffer {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([len, Buffer.from(json), ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]);
}

/** Deterministic pseudo-random weights (xorshift32), so the demo's hashes never change. */
function weights(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = (x / 0xffffffff - 0.5) * 0.04;
  }
  return out;
}

/** The demo repo's files, relative path -> content (about 4 MiB in all). */
export function demoFiles(): Record<string, Buffer> {
  const vocabSize = 64;
  const hidden = 64;
  const layers = 2;
  const tensors: Array<{ name: string; shape: number[]; data: Float32Array }> = [
    { name: 'wte.weight', shape: [vocabSize, hidden], data: weights(vocabSize * hidden, 1) },
    { name: 'wpe.weight', shape: [128, hidden], data: weights(128 * hidden, 2) },
  ];
  for (let l = 0; l < layers; l++) {
    tensors.push({ name: `h.${l}.mlp.c_fc.weight`, shape: [hidden, 4 * hidden], data: weights(hidden * 4 * hidden, 10 + l) });
    tensors.push({ name: `h.${l}.mlp.c_proj.weight`, shape: [4 * hidden, hidden], data: weights(4 * hidden * hidden, 20 + l) });
  }
  // Padding tensor so the file is "a few MB" and takes the LFS/CDN path on both hubs.
  tensors.push({ name: 'extra.padding', shape: [1024, 896], data: weights(1024 * 896, 99) });
  const config = {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    vocab_size: vocabSize,
    n_positions: 128,
    n_embd: hidden,
    n_layer: layers,
    n_head: 2,
    bos_token_id: 2,
    eos_token_id: 3,
    pad_token_id: 1,
  };
  const text = (v: unknown): Buffer => Buffer.from(`${JSON.stringify(v, null, 2)}\n`);
  return {
    'README.md': Buffer.from('# tiny-model\n\nA tiny demo model served by the swift-fetch fake hub. Not a real model.\n'),
    'config.json': text(config),
    'generation_config.json': text({ bos_token_id: 2, eos_token_id: 3, pad_token_id: 1 }),
    'tokenizer.json': Buffer.from(tokenizerJson()),
    'tokenizer_config.json': text({
      tokenizer_class: 'PreTrainedTokenizerFast',
      unk_token: '[UNK]',
      pad_token: '[PAD]',
      bos_token: '[BOS]',
      eos_token: '[EOS]',
      model_max_length: 128,
    }),
    'special_tokens_map.json': text({ unk_token: '[UNK]', pad_token: '[PAD]', bos_token: '[BOS]', eos_token: '[EOS]' }),
    'model.safetensors': safetensors(tensors),
    'docs/usage.txt': Buffer.from('swift-fetch pull hf://demo/tiny-model\n'),
  };
}

/** Writes `<root>/demo/tiny-model/...`; returns the repo directory. */
export async function writeDemo(root: string): Promise<string> {
  const dir = join(root, ...DEMO_REPO.split('/'));
  for (const [path, content] of Object.entries(demoFiles())) {
    const abs = join(dir, ...path.split('/'));
    await mkdir(join(abs, '..'), { recursive: true });
    await writeFile(abs, content);
  }
  return dir;
}
