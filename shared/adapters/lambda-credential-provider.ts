/**
 * The credential chain of the Lambda bundles (infer, batch), put in place of the SDK's default chain
 * (`@aws-sdk/credential-provider-node`) by an esbuild alias (tools/build.mjs, serverless.yml).
 *
 * Lambda gives a function its role's credentials in the environment (`AWS_ACCESS_KEY_ID`,
 * `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`); a container credentials endpoint
 * (`AWS_CONTAINER_CREDENTIALS_FULL_URI` / `_RELATIVE_URI`) is the other way AWS hands a role to code.
 * The default chain also bundles profiles, SSO, login, process and web-identity sources with their STS,
 * SSO and sign-in clients: 355 kB of the 1.38 MB infer bundle that no Lambda instance uses, and whose
 * compilation cost about 8 ms of every cold start (require of the bundle, median of 21: 51 to 44 ms).
 * The container server and the model tool keep the SDK's full chain (profiles, SSO, instance roles).
 */
import { fromEnv } from '@aws-sdk/credential-provider-env';
import { fromHttp } from '@aws-sdk/credential-provider-http';

type Init = Parameters<typeof fromEnv>[0] & Parameters<typeof fromHttp>[0];
type Provider = ReturnType<typeof fromEnv>;
type AwsCredentialIdentity = Awaited<ReturnType<Provider>>;

/** The environment's credentials, else the container credentials endpoint's; else a CredentialsProviderError. */
export function defaultProvider(init: Init = {}): Provider {
  const env = fromEnv(init);
  return async (properties) => {
    try {
      return await env(properties);
    } catch {
      // The variables are absent (CredentialsProviderError): the endpoint is the next source.
    }
    // Made here, not up front: without a container endpoint fromHttp throws (a CredentialsProviderError,
    // which the model store names) as it is made, and the S3 client is built before any request.
    return fromHttp(init)(properties);
  };
}

/** As the default chain's: credentials with an expiry are refreshed 5 minutes before it. */
export const credentialsTreatedAsExpired = (credentials: AwsCredentialIdentity): boolean =>
  credentials.expiration !== undefined && credentials.expiration.getTime() - Date.now() < 300_000;

export const credentialsWillNeedRefresh = (credentials: AwsCredentialIdentity): boolean =>
  credentials.expiration !== undefined;
