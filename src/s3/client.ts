/**
 * A small S3 REST client over undici: the calls swift-fetch needs (list, head, get, put, multipart),
 * each signed with SigV4 by @smithy/signature-v4 (the AWS SDK's own signer), through the same
 * proxy-aware dispatcher and retry policy as every other request of the process. Bodies are
 * streamed; a stream body is made anew for each attempt, so a retry never replays half a stream.
 *
 * Requests are signed in headers, never presigned: no URL ever carries a credential, so no URL in a
 * log or an error message can leak one.
 */
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { XMLParser } from 'fast-xml-parser';
import { Readable } from 'node:stream';
import { request, type Dispatcher } from 'undici';
import { AuthError, IntegrityError, NetworkError, NotFoundError, SwiftFetchError, UsageError } from '../core/errors.js';
import { HUB_API_BACKOFF, RETRYABLE_STATUS, RetryableError, backoffDelay, isRetryableNetworkError, parseRetryAfter } from '../core/retry.js';
import { sleep } from '../core/sleep.js';
import { listingTooLarge, MAX_LISTING_FILES } from '../core/paths.js';
import { BodyTooLargeError, formatLimit, readBodyText } from '../http/body.js';
import { credentialError, type S3Settings } from './settings.js';

/** Largest S3 answer read whole: XML listings of 1,000 keys are a few hundred KiB; a SHA-256 manifest of the largest listing allowed fits. */
const MAX_S3_BODY = 64 * 1024 * 1024;
/** Listing pages followed at most: 1,000 keys a page, so the largest listing allowed fits in a twentieth. */
const MAX_LIST_PAGES = 2_000;

const UNSIGNED = 'UNSIGNED-PAYLOAD';
const USER_AGENT = 'swift-fetch/0.1';

/** RFC 3986 escaping as SigV4 wants it: encodeURIComponent leaves !'()* alone. */
export function escapeUri(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** An object key in a URL path: every segment escaped, the slashes kept. */
export function encodeKey(key: string): string {
  return key.split('/').map(escapeUri).join('/');
}

export interface ListedObject {
  key: string;
  size: number;
  /** Without quotes. */
  etag: string;
}

export interface HeadResult {
  size: number;
  etag: string;
  /** Base64 SHA-256 of the whole object, when the provider stored one (x-amz-checksum-sha256, type FULL_OBJECT). */
  sha256: string | undefined;
}

export interface PartInfo {
  partNumber: number;
  size: number;
  etag: string;
  sha256: string | undefined;
}

type Body = string | Uint8Array | (() => AsyncIterable<Uint8Array>);

export interface S3Call {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE';
  bucket: string;
  key?: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  /** A body, or a function making a fresh stream of exactly `bodySize` bytes for each attempt. */
  body?: Body;
  bodySize?: number;
  /** Statuses returned to the caller instead of thrown (404 for "not there"). */
  accept?: number[];
  /** For messages: what we were doing ("listing s3://b/p/"). */
  what: string;
  signal?: AbortSignal;
  retries?: number;
}

export interface S3Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

const xml = new XMLParser({
  ignoreAttributes: true,
  parseTagValue: false,
  processEntities: true,
  // MinIO writes the quotes of ETags as &#34;: numeric references must be decoded too.
  htmlEntities: true,
  isArray: (name) => ['Contents', 'Part', 'Upload', 'CommonPrefixes'].includes(name),
});

function first(h: S3Response['headers'], name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

export function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^W\//, '').replace(/^"|"$/g, '');
}

export class S3Client {
  readonly settings: S3Settings;
  private readonly signer: SignatureV4;
  private readonly dispatcher: Dispatcher;

  constructor(settings: S3Settings, dispatcher: Dispatcher) {
    this.settings = settings;
    this.dispatcher = dispatcher;
    this.signer = new SignatureV4({
      service: 's3',
      region: settings.region,
      credentials: settings.credentials,
      sha256: Hash.bind(null, 'sha256'),
      // S3 signs the path exactly as sent (already escaped once), unlike every other service.
      uriEscapePath: false,
      applyChecksum: true,
    });
  }

  /** Where an object (or, with key undefined, the bucket) lives: path-style on custom endpoints. */
  url(bucket: string, key?: string): string {
    const path = key === undefined ? '' : encodeKey(key);
    if (this.settings.endpoint) return `${this.settings.endpoint}/${bucket}/${path}`;
    // Dotted bucket names break the wildcard TLS certificate of virtual-hosted style.
    if (bucket.includes('.')) return `https://s3.${this.settings.region}.amazonaws.com/${bucket}/${path}`;
    return `https://${bucket}.s3.${this.settings.region}.amazonaws.com/${path}`;
  }

  /**
   * SigV4 headers for one request (authorization, x-amz-date, x-amz-content-sha256, and the session
   * token when there is one). `host` is signed but not returned: the HTTP client sets the same value.
   */
  async sign(method: string, url: string, headers: Record<string, string>, query: Record<string, string> = {}, body?: string | Uint8Array): Promise<Record<string, string>> {
    const u = new URL(url);
    let signed;
    try {
      signed = await this.signer.sign({
        method,
        protocol: u.protocol,
        hostname: u.hostname,
        ...(u.port ? { port: Number(u.port) } : {}),
        path: u.pathname,
        query,
        headers: { ...headers, host: u.host },
        body,
      });
    } catch (e) {
      throw credentialError(e, this.settings.credentialSource);
    }
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(signed.headers)) if (k.toLowerCase() !== 'host') out[k.toLowerCase()] = String(v);
    return out;
  }

  /** One S3 call with retries for throttling, 5xx and network errors; other failures become our errors. */
  async call(c: S3Call): Promise<S3Response> {
    const base = this.url(c.bucket, c.key);
    const query = c.query ?? {};
    const qs = Object.keys(query)
      .sort()
      .map((k) => (query[k] === '' ? escapeUri(k) : `${escapeUri(k)}=${escapeUri(query[k]!)}`))
      .join('&');
    const url = qs ? `${base}?${qs}` : base;
    const retries = c.retries ?? 5;
    const policy = HUB_API_BACKOFF;
    for (let attempt = 0; ; attempt++) {
      try {
        const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...c.headers };
        if (typeof c.body === 'function') headers['x-amz-content-sha256'] ??= UNSIGNED;
        if (c.bodySize !== undefined) headers['content-length'] = String(c.bodySize);
        const fixed = typeof c.body === 'function' ? undefined : c.body;
        Object.assign(headers, await this.sign(c.method, base, headers, query, fixed));
        const res = await request(url, {
          method: c.method,
          headers,
          body: typeof c.body === 'function' ? Readable.from(c.body(), { objectMode: false }) : c.body,
          dispatcher: this.dispatcher,
          signal: c.signal,
        });
        const text = c.method === 'HEAD' ? (await res.body.dump(), '') : await readBodyText(res, MAX_S3_BODY).catch((e: unknown) => {
          if (!(e instanceof BodyTooLargeError)) throw e;
          throw new UsageError(`${c.what}: ${new URL(base).host} answered with more than ${formatLimit(e.limit)}; refusing to read it`, 'ESF_RESPONSE_TOO_LARGE');
        });
        const out: S3Response = { status: res.statusCode, headers: res.headers, text };
        // "Not there" may be accepted for an object, never for the bucket itself.
        if (out.status < 300 || (c.accept?.includes(out.status) && !out.text.includes('<Code>NoSuchBucket</Code>'))) return out;
        throw this.failure(out, c);
      } catch (e) {
        if (c.signal?.aborted) throw c.signal.reason;
        const retryable = e instanceof RetryableError || (!(e instanceof SwiftFetchError) && isRetryableNetworkError(e));
        if (!retryable) throw e instanceof SwiftFetchError ? e : new NetworkError(`${c.what}: ${(e as Error).message}`, 'ESF_NETWORK', { cause: e });
        if (attempt >= retries) {
          throw new NetworkError(`${c.what}: giving up after ${attempt + 1} attempts at ${new URL(base).host}: ${(e as Error).message}`, 'ESF_NETWORK', { cause: e });
        }
        await sleep(backoffDelay(attempt + 1, policy, e instanceof RetryableError ? e.retryAfterMs : undefined), c.signal);
      }
    }
  }

  /** An S3 error response in our terms: exit 3 for missing things, 4 for refused credentials. */
  private failure(res: S3Response, c: S3Call): Error {
    const err = res.text ? (xml.parse(res.text) as { Error?: { Code?: string; Message?: string } }).Error : undefined;
    const code = err?.Code ?? '';
    const detail = `HTTP ${res.status}${code ? ` ${code}` : ''}${err?.Message ? `: ${err.Message}` : ''}`;
    if (RETRYABLE_STATUS.has(res.status) || code === 'SlowDown' || code === 'InternalError') {
      return new RetryableError(`${c.what}: ${detail}`, parseRetryAfter(res.headers['retry-after']));
    }
    if (code === 'NoSuchBucket') {
      return new NotFoundError(`bucket s3://${c.bucket} does not exist at ${new URL(this.url(c.bucket)).host} (${c.what})`, 'ESF_S3_NO_BUCKET');
    }
    if (res.status === 404 || code === 'NoSuchKey' || code === 'NoSuchUpload') return new NotFoundError(`${c.what}: not found (${detail})`, 'ESF_S3_NOT_FOUND');
    const region = first(res.headers, 'x-amz-bucket-region');
    if (code === 'PermanentRedirect' || code === 'AuthorizationHeaderMalformed' || res.status === 301) {
      return new UsageError(`${c.what}: the bucket is in another region${region ? ` (${region}): set AWS_REGION=${region}` : ': set AWS_REGION'} (${detail})`, 'ESF_S3_REGION');
    }
    if (res.status === 401 || res.status === 403 || ['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'TokenRefreshRequired', 'AccessDenied'].includes(code)) {
      return new AuthError(`${c.what}: refused with the credentials from ${this.settings.credentialSource} (${detail})`, 'ESF_S3_AUTH');
    }
    if (['BadDigest', 'InvalidDigest', 'XAmzContentChecksumMismatch', 'XAmzContentSHA256Mismatch', 'InvalidChecksum'].includes(code)) {
      return new IntegrityError(`${c.what}: the bucket found the bytes sent do not match their checksum (${detail})`, { expected: 'checksum', found: code });
    }
    return new NetworkError(`${c.what}: unexpected ${detail} from ${new URL(this.url(c.bucket)).host}`, 'ESF_S3_STATUS');
  }

  /** Every object under `prefix` (ListObjectsV2, all pages of `pageSize` keys; bounded like a hub listing). */
  async list(bucket: string, prefix: string, signal?: AbortSignal, pageSize = 1000): Promise<ListedObject[]> {
    const out: ListedObject[] = [];
    let token: string | undefined;
    const seen = new Set<string>();
    for (;;) {
      if (seen.size >= MAX_LIST_PAGES) throw listingTooLarge(`s3://${bucket}/${prefix}`, MAX_LIST_PAGES, 'pages');
      const query: Record<string, string> = { 'list-type': '2', prefix, 'max-keys': String(pageSize) };
      if (token) query['continuation-token'] = token;
      const res = await this.call({ method: 'GET', bucket, query, what: `listing s3://${bucket}/${prefix}`, signal });
      const doc = (xml.parse(res.text) as { ListBucketResult?: { Contents?: Array<{ Key?: string; Size?: string; ETag?: string }>; IsTruncated?: string; NextContinuationToken?: string } }).ListBucketResult;
      if (!doc) throw new NetworkError(`listing s3://${bucket}/${prefix}: the answer is not a ListBucketResult`, 'ESF_BAD_RESPONSE');
      for (const o of doc.Contents ?? []) {
        const size = Number(o.Size);
        if (typeof o.Key !== 'string' || !Number.isSafeInteger(size) || size < 0) {
          throw new NetworkError(`listing s3://${bucket}/${prefix}: an entry without a valid key or size`, 'ESF_BAD_RESPONSE');
        }
        out.push({ key: o.Key, size, etag: unquote(o.ETag) });
        if (out.length > MAX_LISTING_FILES) throw listingTooLarge(`s3://${bucket}/${prefix}`);
      }
      if (doc.IsTruncated !== 'true') return out;
      token = doc.NextContinuationToken;
      if (!token || seen.has(token)) throw new NetworkError(`listing s3://${bucket}/${prefix}: pagination does not advance`, 'ESF_BAD_RESPONSE');
      seen.add(token);
    }
  }

  /** Size, ETag and (when stored whole-object) the SHA-256 checksum of an object; undefined when absent. */
  async head(bucket: string, key: string, signal?: AbortSignal): Promise<HeadResult | undefined> {
    const res = await this.call({ method: 'HEAD', bucket, key, headers: { 'x-amz-checksum-mode': 'ENABLED' }, accept: [404], what: `reading s3://${bucket}/${key}`, signal });
    if (res.status === 404) return undefined;
    const sha = first(res.headers, 'x-amz-checksum-sha256');
    const type = first(res.headers, 'x-amz-checksum-type');
    // A multipart object's SHA-256 is a checksum of part checksums ("...-N", type COMPOSITE): not the content's.
    const whole = sha !== undefined && /^[A-Za-z0-9+/]{43}=$/.test(sha) && (type === undefined || type === 'FULL_OBJECT') ? sha : undefined;
    return { size: Number(first(res.headers, 'content-length') ?? NaN), etag: unquote(first(res.headers, 'etag')), sha256: whole };
  }

  /** A small object's text (a manifest); undefined when absent. */
  async getText(bucket: string, key: string, signal?: AbortSignal): Promise<{ text: string; etag: string } | undefined> {
    const res = await this.call({ method: 'GET', bucket, key, accept: [404], what: `reading s3://${bucket}/${key}`, signal });
    if (res.status === 404) return undefined;
    return { text: res.text, etag: unquote(first(res.headers, 'etag')) };
  }

  /** PUT one object; `sha256` (base64) makes the bucket check the bytes and store the checksum. */
  async put(bucket: string, key: string, body: Body, size: number, opts: { sha256?: string; contentType?: string; signal?: AbortSignal } = {}): Promise<string> {
    const headers: Record<string, string> = { 'content-type': opts.contentType ?? 'application/octet-stream' };
    if (opts.sha256) headers['x-amz-checksum-sha256'] = opts.sha256;
    const res = await this.call({ method: 'PUT', bucket, key, headers, body, bodySize: size, what: `uploading s3://${bucket}/${key}`, signal: opts.signal });
    return unquote(first(res.headers, 'etag'));
  }

  async createMultipart(bucket: string, key: string, signal?: AbortSignal): Promise<string> {
    const res = await this.call({
      method: 'POST',
      bucket,
      key,
      query: { uploads: '' },
      headers: { 'x-amz-checksum-algorithm': 'SHA256', 'content-type': 'application/octet-stream' },
      what: `starting a multipart upload of s3://${bucket}/${key}`,
      signal,
    });
    const id = (xml.parse(res.text) as { InitiateMultipartUploadResult?: { UploadId?: string } }).InitiateMultipartUploadResult?.UploadId;
    if (!id) throw new NetworkError(`starting a multipart upload of s3://${bucket}/${key}: no UploadId in the answer`, 'ESF_BAD_RESPONSE');
    return id;
  }

  /** Multipart uploads in progress for exactly `key`, newest first. */
  async listUploads(bucket: string, key: string, signal?: AbortSignal): Promise<Array<{ uploadId: string; initiated: string }>> {
    const res = await this.call({ method: 'GET', bucket, query: { uploads: '', prefix: key }, what: `listing multipart uploads of s3://${bucket}/${key}`, signal });
    const ups = (xml.parse(res.text) as { ListMultipartUploadsResult?: { Upload?: Array<{ Key?: string; UploadId?: string; Initiated?: string }> } }).ListMultipartUploadsResult?.Upload ?? [];
    return ups
      .filter((u) => u.Key === key && typeof u.UploadId === 'string')
      .map((u) => ({ uploadId: u.UploadId!, initiated: u.Initiated ?? '' }))
      .sort((a, b) => (a.initiated < b.initiated ? 1 : -1));
  }

  async listParts(bucket: string, key: string, uploadId: string, signal?: AbortSignal): Promise<PartInfo[]> {
    const out: PartInfo[] = [];
    let marker = '';
    for (;;) {
      const query: Record<string, string> = { uploadId, 'max-parts': '1000' };
      if (marker) query['part-number-marker'] = marker;
      const res = await this.call({ method: 'GET', bucket, key, query, what: `listing the parts of s3://${bucket}/${key}`, signal });
      const doc = (xml.parse(res.text) as {
        ListPartsResult?: { Part?: Array<{ PartNumber?: string; Size?: string; ETag?: string; ChecksumSHA256?: string }>; IsTruncated?: string; NextPartNumberMarker?: string };
      }).ListPartsResult;
      for (const p of doc?.Part ?? []) {
        out.push({ partNumber: Number(p.PartNumber), size: Number(p.Size), etag: unquote(p.ETag), sha256: p.ChecksumSHA256 });
      }
      if (doc?.IsTruncated !== 'true' || !doc.NextPartNumberMarker || doc.NextPartNumberMarker === marker) return out;
      marker = doc.NextPartNumberMarker;
    }
  }

  async uploadPart(bucket: string, key: string, uploadId: string, partNumber: number, body: Body, size: number, sha256: string, signal?: AbortSignal): Promise<string> {
    const res = await this.call({
      method: 'PUT',
      bucket,
      key,
      query: { partNumber: String(partNumber), uploadId },
      headers: { 'x-amz-checksum-sha256': sha256 },
      body,
      bodySize: size,
      what: `uploading part ${partNumber} of s3://${bucket}/${key}`,
      signal,
    });
    return unquote(first(res.headers, 'etag'));
  }

  async completeMultipart(bucket: string, key: string, uploadId: string, parts: ReadonlyArray<{ partNumber: number; etag: string; sha256: string }>, signal?: AbortSignal): Promise<string> {
    const body =
      '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
      parts.map((p) => `<Part><PartNumber>${p.partNumber}</PartNumber><ETag>"${p.etag}"</ETag><ChecksumSHA256>${p.sha256}</ChecksumSHA256></Part>`).join('') +
      '</CompleteMultipartUpload>';
    const res = await this.call({
      method: 'POST',
      bucket,
      key,
      query: { uploadId },
      headers: { 'content-type': 'application/xml' },
      body,
      what: `completing the multipart upload of s3://${bucket}/${key}`,
      signal,
    });
    // S3 may answer 200 and still report an error in the body.
    const doc = xml.parse(res.text) as { CompleteMultipartUploadResult?: { ETag?: string }; Error?: { Code?: string; Message?: string } };
    if (doc.Error) throw new NetworkError(`completing the multipart upload of s3://${bucket}/${key}: ${doc.Error.Code}: ${doc.Error.Message ?? ''}`, 'ESF_S3_STATUS');
    return unquote(doc.CompleteMultipartUploadResult?.ETag);
  }

  async abortMultipart(bucket: string, key: string, uploadId: string, signal?: AbortSignal): Promise<void> {
    await this.call({ method: 'DELETE', bucket, key, query: { uploadId }, accept: [404], what: `aborting a multipart upload of s3://${bucket}/${key}`, signal });
  }

  async delete(bucket: string, key: string, signal?: AbortSignal): Promise<void> {
    await this.call({ method: 'DELETE', bucket, key, accept: [404], what: `deleting s3://${bucket}/${key}`, signal });
  }
}
