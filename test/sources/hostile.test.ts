/**
 * Unbounded reads from hubs (issue 12, item 7): an endless `Link: rel=next` chain took RSS to
 * 4 GB in 55 s, and API bodies were read whole without a limit. Real hostile HTTP servers on
 * loopback; the clients under test are the real hub adapters and, for the exit code, the CLI.
 */
import { Agent } from 'undici';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { MAX_LISTING_ENTRIES, MAX_LISTING_FILES } from '../../src/core/paths.js';
import { parseRef } from '../../src/core/ref.js';
import { S3Client } from '../../src/s3/client.js';
import { s3Settings } from '../../src/s3/settings.js';
import { MAX_API_BODY } from '../../src/sources/http.js';
import { HuggingFaceSource, MAX_TREE_PAGES } from '../../src/sources/huggingface.js';
import { MAX_MS_LIST_BODY, ModelScopeSource } from '../../src/sources/modelscope.js';
import { listTree } from '../bundle/helpers.js';
import { runCli, startHostileServer, streamWithoutEnd, tmpDir, type HostileServer } from '../support/index.js';

const COMMIT = 'c'.repeat(40);
const agent = new Agent();
let server: HostileServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});
afterAll(() => agent.close());

const hf = (endpoint: string) => new HuggingFaceSource({ endpoint, token: 'hf_secret' }, agent);
const ms = (endpoint: string) => new ModelScopeSource({ endpoint, token: undefined }, agent);
const fileItem = (i: number) => ({ type: 'file', path: `f/${i}.txt`, size: 1, oid: 'b'.repeat(40) });

/** A Hugging Face that never stops paging: `perPage` entries a page, and always a next link. */
async function endlessTree(perPage: number): Promise<{ server: HostileServer; pages: () => number }> {
  let pages = 0;
  const s = await startHostileServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    if (url.pathname.includes('/revision/')) return void res.end(JSON.stringify({ sha: COMMIT }));
    const cursor = Number(url.searchParams.get('cursor') ?? 0);
    pages++;
    res.setHeader('link', `<${s.url}${url.pathname}?recursive=true&cursor=${cursor + 1}>; rel="next"`);
    res.end(JSON.stringify(Array.from({ length: perPage }, (_, i) => fileItem(cursor * perPage + i))));
  });
  return { server: s, pages: () => pages };
}

describe('hub listings are bounded', () => {
  it('an endless Link chain of small pages stops at the page cap with exit 2', async () => {
    const t = await endlessTree(1);
    server = t.server;
    const err = await hf(server.url).resolve(parseRef('hf://o/n')).catch((e: unknown) => e);
    expect(err).toMatchObject({ exitCode: 2, code: 'ESF_LISTING_TOO_LARGE' });
    expect(String((err as Error).message)).toMatch(/more than 2,000 pages/);
    expect(t.pages()).toBe(MAX_TREE_PAGES);
  });

  it('an endless Link chain of full pages stops past 100,000 files with exit 2', async () => {
    const t = await endlessTree(1000);
    server = t.server;
    const err = await hf(server.url).resolve(parseRef('hf://o/n')).catch((e: unknown) => e);
    expect(err).toMatchObject({ exitCode: 2, code: 'ESF_LISTING_TOO_LARGE' });
    expect(String((err as Error).message)).toMatch(/more than 100,000 files/);
    expect(t.pages()).toBe(Math.ceil((MAX_LISTING_FILES + 1) / 1000));
  });

  it('a page that adds nothing but links on is refused at once', async () => {
    const t = await endlessTree(0);
    server = t.server;
    await expect(hf(server.url).resolve(parseRef('hf://o/n'))).rejects.toMatchObject({ code: 'ESF_BAD_RESPONSE' });
    expect(t.pages()).toBe(1);
  });

  it('the CLI refuses such a repo with one line and exit 2, writing nothing', async () => {
    const t = await endlessTree(1000);
    server = t.server;
    const dir = await tmpDir();
    const r = await runCli(['pull', 'hf://o/n', '--store', `${dir}/store`, '--state-dir', `${dir}/state`, '--quiet'], {
      env: { HF_ENDPOINT: server.url, HF_TOKEN: undefined, HF_HOME: '/nonexistent', HTTPS_PROXY: undefined, HTTP_PROXY: undefined },
    });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/more than 100,000 files/);
    expect((await listTree(`${dir}/store`)).filter((p) => !p.endsWith('/') && !p.startsWith('.swift-fetch/'))).toEqual([]);
  });

  it('a ModelScope list of more than 100,000 files is refused with exit 2', async () => {
    server = await startHostileServer((req, res) => {
      if (req.url!.includes('/revisions')) return void res.end(JSON.stringify({ Code: 200, Data: { RevisionMap: { Branches: [{ Revision: 'master', CommitId: COMMIT }] } } }));
      const Files = Array.from({ length: MAX_LISTING_FILES + 1 }, (_, i) => ({ Path: `f/${i}`, Type: 'blob', Size: 1 }));
      res.end(JSON.stringify({ Code: 200, Data: { Files } }));
    });
    await expect(ms(server.url).resolve(parseRef('ms://o/n'))).rejects.toMatchObject({ exitCode: 2, code: 'ESF_LISTING_TOO_LARGE' });
  });

  it('a ModelScope list with more entries than the cap is refused before they are looked at', async () => {
    server = await startHostileServer((req, res) => {
      if (req.url!.includes('/revisions')) return void res.end(JSON.stringify({ Code: 200, Data: { RevisionMap: { Branches: [{ Revision: 'master', CommitId: COMMIT }] } } }));
      res.end(`{"Code":200,"Data":{"Files":[${'{"Type":"tree"},'.repeat(MAX_LISTING_ENTRIES)}{"Type":"tree"}]}}`);
    });
    await expect(ms(server.url).resolve(parseRef('ms://o/n'))).rejects.toMatchObject({ exitCode: 2, code: 'ESF_LISTING_TOO_LARGE' });
  });
});

describe('hub API bodies are bounded', () => {
  it('a revision answer without end is cut at the cap (exit 2, not retried), and the hub sees the client hang up', async () => {
    let sent: Promise<number> | undefined;
    server = await startHostileServer((_req, res) => {
      sent = streamWithoutEnd(res, '{"sha":"', 'a');
    });
    const err = await hf(server.url).resolve(parseRef('hf://o/n')).catch((e: unknown) => e);
    expect(err).toMatchObject({ exitCode: 2, code: 'ESF_RESPONSE_TOO_LARGE' });
    expect(server.requests).toHaveLength(1);
    // What the server got into the socket before the client stopped: the cap plus kernel buffers.
    expect(await sent).toBeLessThan(MAX_API_BODY + 16 * 1024 * 1024);
  });

  it('a declared length over the cap is refused before reading', async () => {
    server = await startHostileServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(MAX_API_BODY + 1), 'content-type': 'application/json' });
      res.write('{"sha":"');
    });
    await expect(hf(server.url).resolve(parseRef('hf://o/n'))).rejects.toMatchObject({ code: 'ESF_RESPONSE_TOO_LARGE' });
  });

  it('a ModelScope file list without end is cut at its own, larger cap', async () => {
    let sent: Promise<number> | undefined;
    server = await startHostileServer((req, res) => {
      if (req.url!.includes('/revisions')) return void res.end(JSON.stringify({ Code: 200, Data: { RevisionMap: { Branches: [{ Revision: 'master', CommitId: COMMIT }] } } }));
      sent = streamWithoutEnd(res, '{"Code":200,"Data":{"Files":[', '{"Type":"tree"},');
    });
    await expect(ms(server.url).resolve(parseRef('ms://o/n'))).rejects.toMatchObject({ exitCode: 2, code: 'ESF_RESPONSE_TOO_LARGE' });
    expect(await sent).toBeGreaterThan(MAX_API_BODY);
    expect(await sent).toBeLessThan(MAX_MS_LIST_BODY + 16 * 1024 * 1024);
  });
});

describe('S3 listings are bounded like hub listings', () => {
  const client = (endpoint: string) =>
    new S3Client(s3Settings({ AWS_ENDPOINT_URL: endpoint, AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 's', AWS_REGION: 'us-east-1' }), agent);

  it('an endless ListObjectsV2 chain with fresh tokens stops past 100,000 keys with exit 2', async () => {
    let pages = 0;
    server = await startHostileServer((_req, res) => {
      pages++;
      const keys = Array.from({ length: 1000 }, (_, i) => `<Contents><Key>p/${pages}-${i}</Key><Size>1</Size><ETag>"e"</ETag></Contents>`).join('');
      res.setHeader('content-type', 'application/xml');
      res.end(`<?xml version="1.0"?><ListBucketResult>${keys}<IsTruncated>true</IsTruncated><NextContinuationToken>t${pages}</NextContinuationToken></ListBucketResult>`);
    });
    await expect(client(server.url).list('bucket', 'p/')).rejects.toMatchObject({ exitCode: 2, code: 'ESF_LISTING_TOO_LARGE' });
    expect(pages).toBe(Math.ceil((MAX_LISTING_FILES + 1) / 1000));
  });

  it('an S3 answer without end is cut (exit 2)', async () => {
    server = await startHostileServer((_req, res) => void streamWithoutEnd(res, '<?xml version="1.0"?><ListBucketResult>', '<Contents></Contents>'));
    await expect(client(server.url).list('bucket', 'p/')).rejects.toMatchObject({ exitCode: 2, code: 'ESF_RESPONSE_TOO_LARGE' });
  });
});
