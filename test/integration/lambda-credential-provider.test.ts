/**
 * The credential chain of the Lambda bundles (shared/adapters/lambda-credential-provider.ts): the
 * environment's keys, else a container credentials endpoint (a real HTTP server on loopback here), else
 * the CredentialsProviderError the model store names.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { defaultProvider } from '../../shared/adapters/lambda-credential-provider';

const KEYS = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_CREDENTIAL_EXPIRATION'];
const saved = Object.fromEntries(KEYS.map((k) => [k, process.env[k]]));
let server: Server;
let url: string;

beforeAll(async () => {
  server = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(
      JSON.stringify({
        AccessKeyId: 'FROM-ENDPOINT',
        SecretAccessKey: 'secret',
        Token: 'token',
        Expiration: new Date(Date.now() + 3_600_000).toISOString(),
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/creds`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  for (const k of KEYS) delete process.env[k];
});

afterEach(() => {
  for (const k of KEYS) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

describe('the Lambda credential chain', () => {
  it("takes the environment's keys first, as Lambda sets them from the role", async () => {
    process.env.AWS_ACCESS_KEY_ID = 'FROM-ENV';
    process.env.AWS_SECRET_ACCESS_KEY = 'secret';
    process.env.AWS_SESSION_TOKEN = 'session';
    const credentials = await defaultProvider({ awsContainerCredentialsFullUri: url })();
    expect(credentials).toMatchObject({ accessKeyId: 'FROM-ENV', sessionToken: 'session' });
  });

  it('asks the container credentials endpoint when the environment has no keys', async () => {
    const credentials = await defaultProvider({ awsContainerCredentialsFullUri: url })();
    expect(credentials).toMatchObject({ accessKeyId: 'FROM-ENDPOINT', sessionToken: 'token' });
    expect(credentials.expiration).toBeInstanceOf(Date);
  });

  it('fails with a CredentialsProviderError when there is neither', async () => {
    await expect(defaultProvider()()).rejects.toMatchObject({ name: 'CredentialsProviderError' });
  });
});
