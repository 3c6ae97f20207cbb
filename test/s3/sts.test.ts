/**
 * Web identity (IRSA-style) credentials: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, exchanged at
 * STS AssumeRoleWithWebIdentity for temporary credentials. MinIO implements that STS call against
 * an OpenID provider; the test runs a minimal one (discovery document + JWKS on loopback) and signs
 * its own ID token with a fresh RSA key, as a Kubernetes service-account issuer would.
 */
import { createHash, generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tmpDir } from '../support/index.js';
import { skipWithoutMinio, startMinio, type Minio } from '../support/minio.js';

const CLIENT_ID = 'swift-fetch-test';

interface Issuer {
  url: string;
  token(claims?: Record<string, unknown>): string;
  close(): Promise<void>;
}

async function startIssuer(): Promise<Issuer> {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = randomUUID();
  const jwk = { ...(publicKey as KeyObject).export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  let url = '';
  const server: Server = createServer((req, res) => {
    const body =
      req.url === '/.well-known/openid-configuration'
        ? {
            issuer: url,
            jwks_uri: `${url}/jwks`,
            authorization_endpoint: `${url}/authorize`,
            token_endpoint: `${url}/token`,
            response_types_supported: ['id_token'],
            subject_types_supported: ['public'],
            id_token_signing_alg_values_supported: ['RS256'],
            scopes_supported: ['openid'],
            claims_supported: ['sub', 'aud', 'iss', 'exp'],
          }
        : req.url === '/jwks'
          ? { keys: [jwk] }
          : undefined;
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
    res.end(body ? JSON.stringify(body) : '{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return {
    url,
    token: (claims = {}) => {
      const now = Math.floor(Date.now() / 1000);
      const head = b64({ alg: 'RS256', kid, typ: 'JWT' });
      const body = b64({ iss: url, sub: 'system:serviceaccount:models:swift-fetch', aud: CLIENT_ID, azp: CLIENT_ID, iat: now, exp: now + 3600, ...claims });
      return `${head}.${body}.${sign('sha256', Buffer.from(`${head}.${body}`), privateKey).toString('base64url')}`;
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}

describe.skipIf(skipWithoutMinio())('web identity through STS', () => {
  let issuer: Issuer;
  let minio: Minio;
  let roleArn: string;
  const object = Buffer.from('weights signed with temporary credentials\n');

  beforeAll(async () => {
    issuer = await startIssuer();
    minio = await startMinio({
      env: {
        MINIO_IDENTITY_OPENID_CONFIG_URL: `${issuer.url}/.well-known/openid-configuration`,
        MINIO_IDENTITY_OPENID_CLIENT_ID: CLIENT_ID,
        MINIO_IDENTITY_OPENID_CLIENT_SECRET: 'not-used-by-sts',
        MINIO_IDENTITY_OPENID_ROLE_POLICY: 'readwrite',
        MINIO_IDENTITY_OPENID_SCOPES: 'openid',
      },
    });
    // MinIO names the role it made for the provider once its IAM subsystem is up.
    for (const end = Date.now() + 30_000; !roleArn && Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
      roleArn = /IAM Roles: (arn:minio:iam:[^\s]*:role\/[A-Za-z0-9_-]+)/.exec(minio.log())?.[1] ?? '';
    }
    expect(roleArn, minio.log()).not.toBe('');
    await minio.createBucket('irsa');
    await minio.client.put('irsa', 'model/weights.bin', object, object.length);
  }, 120_000);
  afterAll(async () => {
    await minio?.stop();
    await issuer?.close();
  });

  function env(tokenFile: string, extra: Record<string, string | undefined> = {}) {
    // No access keys at all: the only way in is the token.
    return minio.env({ AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined, AWS_WEB_IDENTITY_TOKEN_FILE: tokenFile, AWS_ROLE_ARN: roleArn, ...extra });
  }

  it('pulls with credentials from AssumeRoleWithWebIdentity; nothing secret in the output', async () => {
    const dir = await tmpDir();
    const tokenFile = join(dir, 'token');
    const token = issuer.token();
    await writeFile(tokenFile, token);
    const r = await runCli(['pull', 's3://irsa/model', '--store', join(dir, 'store'), '--state-dir', join(dir, 'state'), '-q', '--log-level', 'trace'], { env: env(tokenFile) });
    expect(r.code, r.stderr).toBe(0);
    const got = await readFile(join(r.stdout.trim(), 'weights.bin'));
    expect(createHash('sha256').update(got).digest('hex')).toBe(createHash('sha256').update(object).digest('hex'));
    expect(r.stderr + r.stdout).not.toContain(token.split('.')[2]!);
  });

  it('exit 4 when STS refuses the token (expired, or a signature that is not the issuer\'s)', async () => {
    const [h, body] = issuer.token({ sub: 'system:serviceaccount:models:intruder' }).split('.');
    const forged = `${h}.${body}.${issuer.token().split('.')[2]}`;
    for (const token of [issuer.token({ exp: Math.floor(Date.now() / 1000) - 600 }), forged]) {
      const dir = await tmpDir();
      const tokenFile = join(dir, 'token');
      await writeFile(tokenFile, token);
      const r = await runCli(['pull', 's3://irsa/model', '--store', join(dir, 'store'), '--state-dir', join(dir, 'state'), '-q'], { env: env(tokenFile) });
      expect(r.code).toBe(4);
      expect(r.stderr).toMatch(/cannot get AWS credentials from web identity/);
    }
  });
});
