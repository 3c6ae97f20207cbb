/**
 * Where S3 requests go and whose credentials sign them, found the way the AWS CLI and SDKs find
 * them, so a pod configured for `aws s3 cp` needs nothing else:
 * - region: AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1;
 * - endpoint: AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL (MinIO, Ceph RGW, OSS...), addressed
 *   path-style there; AWS itself virtual-hosted style;
 * - credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN; then web identity
 *   (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN: IRSA on EKS, any OIDC issuer) through STS
 *   AssumeRoleWithWebIdentity at AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL when set; then the SDK's
 *   default chain (profiles, SSO, credential_process, container and instance roles).
 */
import { fromTokenFile } from '@aws-sdk/credential-provider-web-identity';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { memoize } from '@smithy/core/config';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { AuthError, UsageError } from '../core/errors.js';
import { RetryableError } from '../core/retry.js';

export interface S3Settings {
  region: string;
  /** A custom endpoint (no trailing "/"); undefined for AWS itself. */
  endpoint: string | undefined;
  credentials: AwsCredentialIdentityProvider;
  /** Named in messages about refused credentials. */
  credentialSource: string;
}

/** Refresh temporary credentials this long before they expire, so no request signs with a dying key. */
const REFRESH_EARLY_MS = 5 * 60_000;

function endpointFrom(value: string | undefined, variable: string): string | undefined {
  if (!value) return undefined;
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new UsageError(`${variable}=${JSON.stringify(value)} is not a URL (expected e.g. http://127.0.0.1:9000)`, 'ESF_BAD_ENDPOINT');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`${variable}: expected an http(s) URL, got ${JSON.stringify(value)}`, 'ESF_BAD_ENDPOINT');
  if (u.search || u.hash || u.username) throw new UsageError(`${variable}: expected a plain base URL without query, fragment or user info`, 'ESF_BAD_ENDPOINT');
  return u.href.replace(/\/+$/, '');
}

export function s3Settings(env: NodeJS.ProcessEnv): S3Settings {
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1';
  const endpoint = env.AWS_ENDPOINT_URL_S3 ? endpointFrom(env.AWS_ENDPOINT_URL_S3, 'AWS_ENDPOINT_URL_S3') : endpointFrom(env.AWS_ENDPOINT_URL, 'AWS_ENDPOINT_URL');
  const { provider, source } = credentialChain(env, region);
  return { region, endpoint, credentials: provider, credentialSource: source };
}

function credentialChain(env: NodeJS.ProcessEnv, region: string): { provider: AwsCredentialIdentityProvider; source: string } {
  if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    const creds: AwsCredentialIdentity = {
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
    };
    return { provider: async () => creds, source: 'AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY' + (env.AWS_SESSION_TOKEN ? ' / AWS_SESSION_TOKEN' : '') };
  }
  if (env.AWS_WEB_IDENTITY_TOKEN_FILE && env.AWS_ROLE_ARN) {
    const sts = env.AWS_ENDPOINT_URL_STS ? endpointFrom(env.AWS_ENDPOINT_URL_STS, 'AWS_ENDPOINT_URL_STS') : endpointFrom(env.AWS_ENDPOINT_URL, 'AWS_ENDPOINT_URL');
    const provider = fromTokenFile({
      webIdentityTokenFile: env.AWS_WEB_IDENTITY_TOKEN_FILE,
      roleArn: env.AWS_ROLE_ARN,
      roleSessionName: env.AWS_ROLE_SESSION_NAME || `swift-fetch-${Date.now()}`,
      clientConfig: { region, ...(sts ? { endpoint: sts } : {}) },
    });
    // The token file is re-read and STS asked again only when the last credentials near expiry
    // (Kubernetes rotates projected tokens in place).
    return { provider: cached(provider), source: `web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN=${env.AWS_ROLE_ARN})` };
  }
  return { provider: cached(defaultProvider()), source: 'the AWS default credential chain (no AWS_ACCESS_KEY_ID or web identity set)' };
}

function cached(provider: AwsCredentialIdentityProvider): AwsCredentialIdentityProvider {
  const expiring = (c: AwsCredentialIdentity) => c.expiration !== undefined && c.expiration.getTime() - Date.now() < REFRESH_EARLY_MS;
  return memoize(provider, expiring, (c) => c.expiration !== undefined);
}

/**
 * A credential provider's failure in our terms: nothing found or refused is an auth problem (4);
 * STS unreachable or failing on its side is worth retrying (the caller's retries decide).
 */
export function credentialError(e: unknown, source: string): Error {
  const err = e as { name?: string; message?: string; $metadata?: { httpStatusCode?: number }; code?: string };
  const status = err.$metadata?.httpStatusCode;
  if (status !== undefined && status >= 500) return new RetryableError(`STS answered ${status}: ${err.message ?? ''}`, undefined, { cause: e });
  if (status === undefined && (err.code !== undefined || err.name === 'TimeoutError')) {
    return new RetryableError(`cannot reach STS: ${err.message ?? err.code}`, undefined, { cause: e });
  }
  const detail = (err.message ?? String(e)).split('\n')[0]!.slice(0, 300);
  return new AuthError(`cannot get AWS credentials from ${source}: ${detail}`, 'ESF_S3_CREDENTIALS', { cause: e });
}
