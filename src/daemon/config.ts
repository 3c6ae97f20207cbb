/**
 * The daemon's configuration: YAML or JSON, validated strictly (unknown keys are errors, so a typo
 * never silently falls back to a default), with messages that name the key path and the form we
 * expected: `config.yaml: peers.port: expected an integer 1-65535, got "abc"`.
 */
import { readFile } from 'node:fs/promises';
import { dirname, extname, isAbsolute, resolve } from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { SwiftFetchError, UsageError } from '../core/errors.js';
import { LOG_LEVELS, type LogLevel } from '../core/log.js';
import { formatRef, parseRef, parseS3Location, type ModelRef, type S3Location } from '../core/ref.js';
import { fnmatch } from '../core/select.js';
import { parseDuration, parseRate, parseSize } from '../core/units.js';
import type { KubeSettings } from '../kube/index.js';
import { normalizeAllowGlob } from '../mirror/allow.js';
import {
  DEFAULT_FORGET_FAILED_MS,
  DEFAULT_MAX_REQUESTED,
  DEFAULT_REQUESTS_PER_MINUTE,
  DEFAULT_GC_INTERVAL_MS,
  DEFAULT_LISTEN,
  DEFAULT_LOG_LEVEL,
  DEFAULT_MAX_CONCURRENT_PULLS,
  DEFAULT_PEER_PORT,
  defaultStateDir,
  defaultStoreDir,
  expandHome,
} from './defaults.js';

export * from './defaults.js';

export { LOG_LEVELS, type LogLevel } from '../core/log.js';

/** One declared model: the parsed ref, its canonical key, and optional file filters. */
export interface ModelSpec {
  ref: ModelRef;
  /** Canonical form `hub://ORG/NAME@REVISION`: the identity used by the reconciler and the API. */
  key: string;
  include?: string[];
  exclude?: string[];
}

export interface PeersConfig {
  static: string[];
  dns?: string;
  port: number;
  tokenFile?: string;
  /** CA certificates that peers' TLS certificates must chain to (PEM). */
  caFile?: string;
  /** The name a peer's certificate must carry when it is reached by address (default: `dns`). */
  serverName?: string;
  /** Bytes per second served to peers; 0 = unlimited. */
  uploadMaxRate: number;
  uploadConcurrency: number;
}

/** Who may use the node API, and how much of it (see guard.ts). */
export interface ApiConfig {
  /** Bearer token that changing routes need; without one they take only loopback clients. */
  tokenFile?: string;
  /** Put the reading routes (models, events, max-rate) under the same rule. */
  protectReads: boolean;
  /** On-demand (undeclared) models tracked at once. */
  maxRequested: number;
  /** An on-demand model that failed and was not asked for again in this long is forgotten. */
  forgetFailedAfterMs: number;
  /** Changing requests per client and minute (also the burst); 0 = no limit. */
  requestsPerMinute: number;
}

/** HTTPS for the listener (API, metrics, peer routes), re-read when the files change. */
export interface TlsConfig {
  certFile: string;
  keyFile: string;
}

export interface DaemonConfig {
  /** Where the config came from (for messages). */
  source: string;
  store: string;
  stateDir: string;
  listen: { host: string; port: number };
  models: ModelSpec[];
  modelsFile?: string;
  /** Bytes per second over all transfers; 0 = unlimited. */
  maxRate: number;
  connections?: number;
  chunkSize?: number;
  /** Models pulled at the same time. */
  maxConcurrentPulls: number;
  peers: PeersConfig;
  gc: { maxBytes: number; intervalMs: number };
  /** The bundle drop folder (`imports: DIR` or `imports: {dir, trust}`). */
  imports?: string;
  /** Public key files (`imports.trust`): only bundles signed by one of them are imported. */
  importsTrust?: string[];
  /** A lock file (`lockFile:`): the refs it names are pulled at their locked commit, checked against its SHA-256s. */
  lockFile?: string;
  /** With lockFile, refuse (fail) models the lock does not name. */
  locked?: boolean;
  /** The hub mirror (`mirror: true` or `{allow: [globs]}`); absent when off. */
  mirror?: { allow?: string[] };
  logLevel: LogLevel;
  /** ModelCache objects, node labels and Events through the Kubernetes API (off by default). */
  kubernetes: KubeSettings;
  /** Buckets with `push --replica` copies: hub files are read from them before the hub. */
  replicas?: S3Location[];
  /** Push declared models (all, or those listed) to a bucket once they are ready. */
  backup?: { to: S3Location; models?: string[] };
  api: ApiConfig;
  tls?: TlsConfig;
}

// ---------------------------------------------------------------------------------------------
// Leaf validators: they own their messages, so every error reads "expected X, got Y".

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  const s = JSON.stringify(v);
  return s.length > 80 ? s.slice(0, 77) + '…' : s;
}

function leaf<T>(expected: string, parse: (v: unknown) => T | undefined) {
  return z.unknown().transform((v, ctx): T => {
    let out: T | undefined;
    let reason: string | undefined;
    try {
      out = parse(v);
    } catch (e) {
      reason = e instanceof SwiftFetchError ? e.message : undefined;
    }
    if (out === undefined) {
      ctx.addIssue({ code: 'custom', message: reason ?? `expected ${expected}, got ${describe(v)}` });
      return z.NEVER;
    }
    return out;
  });
}

function intIn(min: number, max: number) {
  return leaf(`an integer ${min}-${max}`, (v) => {
    const n = typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : v;
    return typeof n === 'number' && Number.isInteger(n) && n >= min && n <= max ? n : undefined;
  });
}

const nonEmptyString = leaf('a non-empty string', (v) => (typeof v === 'string' && v.trim() !== '' ? v : undefined));

const size = (min = 0) =>
  leaf(`a size such as 16MiB, 500GiB or a number of bytes${min > 0 ? ` (at least ${min})` : ''}`, (v) => {
    if (typeof v !== 'string' && typeof v !== 'number') return undefined;
    try {
      const n = parseSize(v);
      return n >= min ? n : undefined;
    } catch {
      return undefined;
    }
  });

const rate = leaf('a rate such as 200MB/s, 1Gbit/s, or 0 for unlimited', (v) => {
  if (typeof v !== 'string' && typeof v !== 'number') return undefined;
  try {
    return parseRate(v);
  } catch (e) {
    // A rate out of range says why (it would round to 0 = unlimited, or exceeds any link).
    if ((e as { code?: string }).code === 'ESF_RATE_RANGE') throw e;
    return undefined;
  }
});

const duration = leaf('a duration such as 30s, 10m or 1h', (v) => {
  if (typeof v !== 'string' && typeof v !== 'number') return undefined;
  try {
    const ms = parseDuration(v);
    return ms > 0 ? ms : undefined;
  } catch {
    return undefined;
  }
});

const listen = leaf('host:port such as 0.0.0.0:7070, [::1]:7070 or :7070 (port 1-65535, or 0 for any free port)', (v) => {
  if (typeof v === 'number') return Number.isInteger(v) && v > 0 && v < 65536 ? { host: DEFAULT_LISTEN.host, port: v } : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]*)):(\d{1,5})$/.exec(v.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined; // 0 picks a free port (tests, ad-hoc runs)
  return { host: m[1] ?? (m[2] === '' ? '0.0.0.0' : m[2]!), port };
});

const url = leaf('an http(s) base URL such as http://10.0.0.5:7070', (v) => {
  if (typeof v !== 'string') return undefined;
  try {
    const u = new URL(v);
    return u.protocol === 'http:' || u.protocol === 'https:' ? v.replace(/\/+$/, '') : undefined;
  } catch {
    return undefined;
  }
});

const hostname = leaf('a DNS name such as swift-fetch-peers.ns.svc.cluster.local', (v) =>
  typeof v === 'string' && /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$/.test(v) ? v : undefined,
);

const globList = leaf('a list of glob patterns such as ["*.json", "*.safetensors"]', (v) => {
  if (!Array.isArray(v) || !v.every((g) => typeof g === 'string' && g !== '')) return undefined;
  // Compiled once here so a pattern the matcher refuses (too long) is bad input at the door.
  for (const g of v as string[]) fnmatch(g);
  return v as string[];
});

const bool = leaf('true or false', (v) => (typeof v === 'boolean' ? v : undefined));
const s3Location = leaf('an s3://BUCKET/PREFIX location', (v) => (typeof v === 'string' ? parseS3Location(v) : undefined));
const mirrorAllow = leaf('a list of repo globs such as ["hf://Qwen/*", "ms://*"]', (v) =>
  Array.isArray(v) && v.every((g) => typeof g === 'string' && g !== '') ? (v as string[]).map(normalizeAllowGlob) : undefined,
);

const logLevel = leaf(`one of ${LOG_LEVELS.join(', ')}`, (v) =>
  typeof v === 'string' && (LOG_LEVELS as readonly string[]).includes(v) ? (v as LogLevel) : undefined,
);

function refLeaf(env: NodeJS.ProcessEnv) {
  // parseRef's own message says exactly what is wrong with the ref; leaf() passes it through.
  return leaf('a model reference such as hf://ORG/NAME or ms://ORG/NAME@REVISION', (v) =>
    typeof v === 'string' ? parseRef(v, env) : undefined,
  );
}

/** `{ref, include, exclude}`: a model item in its long form, and the body of `POST /v1/pulls`. */
function modelObject(env: NodeJS.ProcessEnv, ref = refLeaf(env)) {
  return z.strictObject({ ref, include: globList.optional(), exclude: globList.optional() });
}

function modelItem(env: NodeJS.ProcessEnv) {
  const ref = refLeaf(env);
  return z.union([ref, modelObject(env, ref)]);
}

const peersSchema = z.strictObject({
  static: z.array(url).nullish(),
  dns: hostname.nullish(),
  port: intIn(1, 65535).optional(),
  tokenFile: nonEmptyString.nullish(),
  caFile: nonEmptyString.nullish(),
  serverName: hostname.nullish(),
  uploadMaxRate: rate.nullish(),
  uploadConcurrency: intIn(1, 1024).optional(),
});

const apiSchema = z.strictObject({
  tokenFile: nonEmptyString.nullish(),
  protectReads: bool.optional(),
  maxRequested: intIn(1, 100_000).optional(),
  forgetFailedAfter: duration.optional(),
  requestsPerMinute: intIn(0, 1_000_000).optional(),
});

const tlsSchema = z.strictObject({ certFile: nonEmptyString, keyFile: nonEmptyString });

const gcSchema = z.strictObject({ maxBytes: size().nullish(), interval: duration.optional() });

const backupSchema = (env: NodeJS.ProcessEnv) => z.strictObject({ to: s3Location, models: z.array(refLeaf(env)).nullish() });

const mirrorObject = z.strictObject({ allow: mirrorAllow.optional() });

const importsObject = z.strictObject({ dir: nonEmptyString, trust: z.array(nonEmptyString).nullish() });

const kubernetesSchema = z.strictObject({ enabled: bool.optional(), kubeconfig: nonEmptyString.nullish(), context: nonEmptyString.nullish() });

function configSchema(env: NodeJS.ProcessEnv) {
  return z.strictObject({
    store: nonEmptyString.optional(),
    stateDir: nonEmptyString.optional(),
    listen: listen.optional(),
    models: z.array(modelItem(env)).nullish(),
    modelsFile: nonEmptyString.nullish(),
    maxRate: rate.nullish(),
    connections: intIn(1, 256).nullish(),
    chunkSize: size(64 * 1024).nullish(),
    maxConcurrentPulls: intIn(1, 64).optional(),
    peers: peersSchema.nullish(),
    gc: gcSchema.nullish(),
    imports: z.union([nonEmptyString, importsObject]).nullish(),
    lockFile: nonEmptyString.nullish(),
    locked: bool.optional(),
    mirror: z.union([z.boolean(), mirrorObject]).nullish(),
    logLevel: logLevel.optional(),
    kubernetes: kubernetesSchema.nullish(),
    replicas: z.array(s3Location).nullish(),
    backup: backupSchema(env).nullish(),
    api: apiSchema.nullish(),
    tls: tlsSchema.nullish(),
  });
}

/** The keys each object of the config may hold, for "unknown key" messages: read off the schemas. */
const KNOWN_KEYS: Record<string, string[]> = {
  '': Object.keys(configSchema({}).shape),
  peers: Object.keys(peersSchema.shape),
  gc: Object.keys(gcSchema.shape),
  kubernetes: Object.keys(kubernetesSchema.shape),
  mirror: Object.keys(mirrorObject.shape),
  imports: Object.keys(importsObject.shape),
  backup: Object.keys(backupSchema({}).shape),
  api: Object.keys(apiSchema.shape),
  tls: Object.keys(tlsSchema.shape),
  model: Object.keys(modelObject({}).shape),
};

// ---------------------------------------------------------------------------------------------

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out;
}

function allowedKeys(path: readonly PropertyKey[]): string | undefined {
  const where = path.length === 0 ? '' : typeof path[path.length - 1] === 'number' ? 'model' : String(path[path.length - 1]);
  return KNOWN_KEYS[where]?.join(', ');
}

/** One line per problem, each naming the key path; a union's branch errors are reduced to the most useful. */
function issueLines(error: z.ZodError, keysAt: (path: readonly PropertyKey[]) => string | undefined = allowedKeys): string[] {
  const lines: string[] = [];
  const visit = (issues: readonly z.core.$ZodIssue[], prefix: readonly PropertyKey[]) => {
    for (const iss of issues) {
      const path = [...prefix, ...iss.path];
      if (iss.code === 'invalid_union') {
        // A model item is "a ref string or {ref, include, exclude}": report the branch that
        // matches the shape the user wrote.
        const branches = iss.errors;
        const input = iss.input;
        const pick = typeof input === 'object' && input !== null ? branches[1] : branches[0];
        if (pick && pick.length > 0) {
          visit(pick, path);
          continue;
        }
        lines.push(`${formatPath(path)}: expected a model reference string or {ref, include, exclude}, got ${describe(input)}`);
        continue;
      }
      if (iss.code === 'unrecognized_keys') {
        const allowed = keysAt(path);
        for (const k of iss.keys) lines.push(`${formatPath([...path, k])}: unknown key${allowed ? ` (expected one of: ${allowed})` : ''}`);
        continue;
      }
      const where = formatPath(path) || '(top level)';
      if (iss.code === 'invalid_type') {
        const exp = iss.expected === 'object' ? 'an object (key: value mapping)' : iss.expected === 'array' ? 'a list' : iss.expected;
        lines.push(`${where}: expected ${exp}, got ${describe(iss.input)}`);
        continue;
      }
      lines.push(`${where}: ${iss.message}`);
    }
  };
  visit(error.issues, []);
  return lines;
}

/** Zod issues as one UsageError, a line per problem, each prefixed with the document's name. */
function toUsageError(source: string, error: z.ZodError): UsageError {
  return new UsageError(issueLines(error).map((l) => `${source}: ${l}`).join('\n'), 'ESF_BAD_CONFIG');
}

function parseDocument(text: string, source: string): unknown {
  if (extname(source).toLowerCase() === '.json') {
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new UsageError(`${source}: not valid JSON: ${(e as Error).message}`, 'ESF_BAD_CONFIG');
    }
  }
  // YAML 1.2 is a superset of JSON, so anything that is not declared JSON goes through the YAML parser.
  try {
    const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      const pos = e.linePos?.[0];
      const at = pos ? `line ${pos.line}, column ${pos.col}: ` : '';
      throw new UsageError(`${source}: not valid YAML: ${at}${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`, 'ESF_BAD_CONFIG');
    }
    return doc.toJS();
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`${source}: not valid YAML: ${(e as Error).message}`, 'ESF_BAD_CONFIG');
  }
}

function toSpec(item: ModelRef | { ref: ModelRef; include?: string[] | undefined; exclude?: string[] | undefined }): ModelSpec {
  const isObj = 'ref' in item && typeof item.ref === 'object';
  const ref = isObj ? (item as { ref: ModelRef }).ref : (item as ModelRef);
  const spec: ModelSpec = { ref, key: formatRef(ref) };
  if (isObj) {
    const o = item as { include?: string[]; exclude?: string[] };
    if (o.include) spec.include = o.include;
    if (o.exclude) spec.exclude = o.exclude;
  }
  return spec;
}

/**
 * A model asked for at run time (`POST /v1/pulls`): the config's long model item, checked by the
 * same schema, so a body is valid exactly when it would be valid in `models:`.
 */
export function parseModelRequest(input: unknown, env: NodeJS.ProcessEnv = process.env): ModelSpec {
  const result = modelObject(env).safeParse(input, { reportInput: true });
  if (!result.success) throw new UsageError(issueLines(result.error, () => KNOWN_KEYS.model!.join(', ')).join('; '), 'ESF_BAD_REQUEST');
  return toSpec(result.data);
}

/** Later duplicates of a model (same canonical ref) are dropped: the first declaration wins. */
export function dedupeModels(specs: readonly ModelSpec[]): ModelSpec[] {
  const seen = new Set<string>();
  return specs.filter((s) => (seen.has(s.key) ? false : (seen.add(s.key), true)));
}

export interface ParseOptions {
  env?: NodeJS.ProcessEnv;
  /** Directory relative paths are resolved against; default: the config file's directory. */
  baseDir?: string;
}

/**
 * Parse and validate a config document. `source` names it in messages and picks the format by
 * extension (`.json` → JSON; anything else → YAML, which also reads JSON).
 */
export function parseConfig(text: string, source: string, opts: ParseOptions = {}): DaemonConfig {
  const env = opts.env ?? process.env;
  const baseDir = opts.baseDir ?? dirname(resolve(source));
  const doc = parseDocument(text, source) ?? {};
  const result = configSchema(env).safeParse(doc, { reportInput: true });
  if (!result.success) throw toUsageError(source, result.error);
  const c = result.data;
  const path = (p: string) => {
    const e = expandHome(p, env);
    return isAbsolute(e) ? e : resolve(baseDir, e);
  };
  const cfg: DaemonConfig = {
    source,
    store: path(c.store ?? defaultStoreDir(env)),
    stateDir: path(c.stateDir ?? defaultStateDir(env)),
    listen: c.listen ?? { ...DEFAULT_LISTEN },
    models: dedupeModels((c.models ?? []).map(toSpec)),
    maxRate: c.maxRate ?? 0,
    maxConcurrentPulls: c.maxConcurrentPulls ?? DEFAULT_MAX_CONCURRENT_PULLS,
    peers: {
      static: c.peers?.static ?? [],
      port: c.peers?.port ?? DEFAULT_PEER_PORT,
      uploadMaxRate: c.peers?.uploadMaxRate ?? 0,
      uploadConcurrency: c.peers?.uploadConcurrency ?? 4,
    },
    gc: { maxBytes: c.gc?.maxBytes ?? 0, intervalMs: c.gc?.interval ?? DEFAULT_GC_INTERVAL_MS },
    logLevel: c.logLevel ?? DEFAULT_LOG_LEVEL,
    kubernetes: { enabled: c.kubernetes?.enabled ?? false },
    api: {
      protectReads: c.api?.protectReads ?? false,
      maxRequested: c.api?.maxRequested ?? DEFAULT_MAX_REQUESTED,
      forgetFailedAfterMs: c.api?.forgetFailedAfter ?? DEFAULT_FORGET_FAILED_MS,
      requestsPerMinute: c.api?.requestsPerMinute ?? DEFAULT_REQUESTS_PER_MINUTE,
    },
  };
  if (c.replicas?.length) cfg.replicas = c.replicas;
  if (c.backup) cfg.backup = { to: c.backup.to, ...(c.backup.models ? { models: c.backup.models.map((r) => formatRef(r)) } : {}) };
  if (c.api?.tokenFile) cfg.api.tokenFile = path(c.api.tokenFile);
  if (c.tls) cfg.tls = { certFile: path(c.tls.certFile), keyFile: path(c.tls.keyFile) };
  if (c.peers?.caFile) cfg.peers.caFile = path(c.peers.caFile);
  if (c.peers?.serverName) cfg.peers.serverName = c.peers.serverName;
  if (c.modelsFile) cfg.modelsFile = path(c.modelsFile);
  if (c.connections) cfg.connections = c.connections;
  if (c.chunkSize) cfg.chunkSize = c.chunkSize;
  if (c.peers?.dns) cfg.peers.dns = c.peers.dns;
  if (c.peers?.tokenFile) cfg.peers.tokenFile = path(c.peers.tokenFile);
  if (typeof c.imports === 'string') cfg.imports = path(c.imports);
  else if (c.imports) {
    cfg.imports = path(c.imports.dir);
    if (c.imports.trust?.length) cfg.importsTrust = c.imports.trust.map(path);
  }
  if (c.lockFile) cfg.lockFile = path(c.lockFile);
  if (c.locked) {
    if (!cfg.lockFile) throw new UsageError(`${source}: locked: true needs lockFile (the lock whose refs are allowed)`, 'ESF_BAD_CONFIG');
    cfg.locked = true;
  }
  if (c.kubernetes?.kubeconfig) cfg.kubernetes.kubeconfig = path(c.kubernetes.kubeconfig);
  if (c.kubernetes?.context) cfg.kubernetes.context = c.kubernetes.context;
  if (c.mirror) cfg.mirror = c.mirror === true || !c.mirror.allow ? {} : { allow: c.mirror.allow };
  return cfg;
}

/** Daemon flags that override (or, for models, add to) the config file. */
export interface ConfigFlags {
  store?: string;
  stateDir?: string;
  listen?: string;
  /** `--model`, repeatable: added to the declared models (the file's declaration wins on duplicates). */
  models?: string[];
  logLevel?: string;
}

/** One flag's value through the config's own validator; the message names the flag. */
function flagValue<T>(schema: z.ZodType<T>, value: unknown, flag: string): T {
  const r = schema.safeParse(value, { reportInput: true });
  if (r.success) return r.data;
  throw new UsageError(issueLines(r.error).map((l) => `${flag}: ${l.replace(/^\(top level\): /, '')}`).join('\n'), 'ESF_USAGE');
}

/**
 * A config with command-line flags applied: what a quick try needs (`swift-fetch daemon --store DIR
 * --listen :7070 --model REF ...`) without writing a file. Validated by the same rules as the file.
 */
export function applyFlags(config: DaemonConfig, flags: ConfigFlags, env: NodeJS.ProcessEnv = process.env): DaemonConfig {
  const out: DaemonConfig = { ...config };
  const path = (p: string) => resolve(expandHome(p, env));
  if (flags.store) out.store = path(flags.store);
  if (flags.stateDir) out.stateDir = path(flags.stateDir);
  if (flags.listen !== undefined) out.listen = flagValue(listen, flags.listen, '--listen');
  if (flags.logLevel !== undefined) out.logLevel = flagValue(logLevel, flags.logLevel, '--log-level');
  if (flags.models?.length) {
    const ref = refLeaf(env);
    out.models = dedupeModels([...config.models, ...flags.models.map((m) => toSpec(flagValue(ref, m, '--model')))]);
  }
  return out;
}

/** Read and parse a config file; a missing or unreadable file is a usage error too. */
export async function loadConfig(file: string, opts: ParseOptions = {}): Promise<DaemonConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read config ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'ESF_BAD_CONFIG', { cause: e });
  }
  return parseConfig(text, file, opts);
}

/**
 * Parse a models file: a YAML (or JSON) list of refs or `{ref, include, exclude}`, or an object
 * with such a list under `models`. An empty document is an empty list.
 */
export function parseModelsFile(text: string, source: string, env: NodeJS.ProcessEnv = process.env): ModelSpec[] {
  const doc = parseDocument(text, source) ?? [];
  const list = Array.isArray(doc) ? doc : typeof doc === 'object' && doc !== null && 'models' in doc ? ((doc as { models: unknown }).models ?? []) : doc;
  const prefix = Array.isArray(doc) ? '' : 'models';
  const result = z.array(modelItem(env)).safeParse(list, { reportInput: true });
  if (!result.success) {
    const err = toUsageError(source, result.error);
    if (prefix) err.message = err.message.replaceAll(`${source}: [`, `${source}: ${prefix}[`);
    throw err;
  }
  return dedupeModels(result.data.map(toSpec));
}
