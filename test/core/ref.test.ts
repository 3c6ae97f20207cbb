import { describe, expect, it } from 'vitest';
import { ExitCode, UnsafePathError, UsageError } from '../../src/core/errors.js';
import { validateListing, validateRepoPath } from '../../src/core/paths.js';
import { parseRef } from '../../src/core/ref.js';
import { selectFiles } from '../../src/core/select.js';
import { parseDuration, parseRate, parseSize } from '../../src/core/units.js';

describe('parseRef', () => {
  it('reads both schemes, the alias, revisions and defaults', () => {
    expect(parseRef('hf://Qwen/Qwen2.5-0.5B')).toEqual({ hub: 'hf', org: 'Qwen', name: 'Qwen2.5-0.5B', revision: 'main' });
    expect(parseRef('ms://Qwen/Qwen2.5-7B-Instruct@v1.0')).toEqual({ hub: 'ms', org: 'Qwen', name: 'Qwen2.5-7B-Instruct', revision: 'v1.0' });
    expect(parseRef('modelscope://a/b').hub).toBe('ms');
    expect(parseRef('hf://a/b@refs/pr/1').revision).toBe('refs/pr/1');
  });

  it('keeps single dashes and dots, which real repos use', () => {
    expect(parseRef('hf://meta-llama/Llama-3.1-8B')).toMatchObject({ org: 'meta-llama', name: 'Llama-3.1-8B' });
    expect(parseRef('ms://a-b/c.d-e_f')).toMatchObject({ org: 'a-b', name: 'c.d-e_f' });
  });

  it('treats a bare ORG/NAME as ModelScope unless USE_HF is set, as ms-swift does', () => {
    expect(parseRef('org/name', {}).hub).toBe('ms');
    expect(parseRef('org/name', {}).revision).toBe('master');
    expect(parseRef('org/name', { USE_HF: '1' }).hub).toBe('hf');
    expect(parseRef('org/name', { USE_HF: 'true' }).revision).toBe('main');
    expect(parseRef('org/name', { USE_HF: '0' }).hub).toBe('ms');
  });

  it.each([
    '', 'hf://', 'hf://onlyone', 'hf://a/b/c', 's3://a/b', 'hf://../b', 'hf://a/..', 'hf://a/b@', 'hf://a/b@../x',
    'hf://a/b@x//y', 'hf:// a/b', 'C:/a/b', 'hf://a/.hidden', 'hf://-a/b', 'hf://a/b@/abs',
    // "--" joins org and name in the store's folder names; the Hub refuses it (and "..") too.
    'hf://col--a/b', 'hf://col/a--b', 'ms://col--a/b', 'col/a--b', 'hf://a..b/c', 'hf://a/b..c',
  ])('rejects %j with a usage error (exit 2)', (bad) => {
    let err: unknown;
    try {
      parseRef(bad, {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).exitCode).toBe(ExitCode.usage);
  });
});

describe('validateRepoPath', () => {
  it.each(['config.json', 'a/b/c.safetensors', 'weird name (1).bin', 'ünïcode/ok.txt', '.gitattributes'])('accepts %j', (p) => {
    expect(validateRepoPath(p)).toBe(p);
  });
  it.each(['../x', 'a/../../x', '/etc/passwd', 'a\u0000b', 'a//b', './a', 'a/.', 'a\\..\\b', 'C:/x', '', 'a/', 'x'.repeat(300)])('refuses %j', (p) => {
    expect(() => validateRepoPath(p)).toThrow(UnsafePathError);
  });
  it('refuses a listing where a path is both a file and a directory, or listed twice', () => {
    expect(() => validateListing(['a', 'a/b'])).toThrow(/both as a file and as a directory/);
    expect(() => validateListing(['a', 'a'])).toThrow(/listed twice/);
  });
});

describe('units', () => {
  it('parses rates in bytes and bits', () => {
    expect(parseRate('50MB/s')).toBe(50e6);
    expect(parseRate('50MiB/s')).toBe(50 * 1024 * 1024);
    expect(parseRate('400Mbit/s')).toBe(50e6);
    expect(parseRate('1Gbps')).toBe(125e6);
    expect(parseRate('50MBps')).toBe(50e6);
    expect(parseRate('400mbit/s')).toBe(50e6);
    expect(parseRate('0')).toBe(0);
    expect(parseRate('unlimited')).toBe(0);
    expect(() => parseRate('fast')).toThrow(UsageError);
    expect(() => parseRate('50XB/s')).toThrow(UsageError);
  });
  it('parses sizes and durations', () => {
    expect(parseSize('16MiB')).toBe(16 * 1024 * 1024);
    expect(parseSize('500GiB')).toBe(500 * 1024 ** 3);
    expect(parseSize('2Gi')).toBe(2 * 1024 ** 3);
    expect(parseDuration('30m')).toBe(1_800_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('250ms')).toBe(250);
    expect(() => parseDuration('soon')).toThrow(UsageError);
    expect(() => parseSize('-1')).toThrow(UsageError);
  });
});

describe('selectFiles', () => {
  const files = ['config.json', 'onnx/model.onnx', 'onnx/config.json', 'model.safetensors', 'sub/tokenizer.json'].map((path) => ({ path, size: 1, lfs: false }));
  it('matches names at any depth and paths with slashes; exclusions win', () => {
    expect(selectFiles(files, ['*.json']).map((f) => f.path)).toEqual(['config.json', 'onnx/config.json', 'sub/tokenizer.json']);
    expect(selectFiles(files, ['onnx/*']).map((f) => f.path)).toEqual(['onnx/model.onnx', 'onnx/config.json']);
    expect(selectFiles(files, ['s?b/[a-t]*']).map((f) => f.path)).toEqual(['sub/tokenizer.json']);
    expect(selectFiles(files, ['*.[!j]*']).map((f) => f.path)).toEqual(['onnx/model.onnx', 'model.safetensors']);
    expect(selectFiles(files, [], ['onnx/']).map((f) => f.path)).toEqual(['config.json', 'model.safetensors', 'sub/tokenizer.json']);
    expect(selectFiles(files, ['*.json'], ['onnx/*']).map((f) => f.path)).toEqual(['config.json', 'sub/tokenizer.json']);
  });
});
