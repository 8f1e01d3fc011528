// A real OpenID Connect provider (node-oidc-provider) for the browser
// end-to-end tests of the sign-in, on 127.0.0.1 and an ephemeral port.
//
// Configuration, from `--name=value` arguments or the environment:
//   IDP_CLIENT_ID       the one client's id (default `llm-proxy`)
//   IDP_CLIENT_SECRET   its secret; empty or unset: a public client (PKCE alone)
//   IDP_REDIRECT_URI    its redirect URI. A loopback URI is registered for a
//                       native client, so any port of it matches (RFC 8252
//                       section 7.3): the proxy's port is not known yet when
//                       the provider starts.
//   IDP_EMAIL_IN_ID_TOKEN=1  put email claims in the ID token too; by default
//                       they come only from the userinfo endpoint, as the
//                       spec has it for the code flow.
//
// Accounts: any login name X signs in (any password) as sub X with email
// X@example.com (X itself if it has an @), email_verified true, except names
// starting with `unverified` (false). PKCE (S256) is required.
//
// Prints one line `{"issuer": "http://127.0.0.1:PORT"}` on stdout once
// listening; exits when stdin closes.

import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info: stdout is ours alone.
console.info = console.log = (...args) => console.error(...args);

function setting(name, fallback) {
  const flag = `--${name.toLowerCase().replace(/^idp_/, '').replaceAll('_', '-')}=`;
  const arg = process.argv.slice(2).find((a) => a.startsWith(flag));
  if (arg !== undefined) return arg.slice(flag.length);
  const value = process.env[name];
  return value === undefined || value === '' ? fallback : value;
}

const clientId = setting('IDP_CLIENT_ID', 'llm-proxy');
const clientSecret = setting('IDP_CLIENT_SECRET', undefined);
const redirectUri = setting('IDP_REDIRECT_URI', 'http://127.0.0.1/sso/callback');
const emailInIdToken = setting('IDP_EMAIL_IN_ID_TOKEN', '0') === '1';

const LOOPBACK = new Set(['127.0.0.1', '[::1]', 'localhost']);
const redirect = new URL(redirectUri);
const native = redirect.protocol === 'http:' && LOOPBACK.has(redirect.hostname);
if (native) redirect.port = '';

function account(login) {
  const email = login.includes('@') ? login : `${login}@example.com`;
  return {
    accountId: login,
    async claims() {
      return { sub: login, email, email_verified: !login.startsWith('unverified') };
    },
  };
}

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      ...(clientSecret
        ? { client_secret: clientSecret, token_endpoint_auth_method: 'client_secret_basic' }
        : { token_endpoint_auth_method: 'none' }),
      application_type: native ? 'native' : 'web',
      redirect_uris: [redirect.href],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    pkce: { required: () => true },
    scopes: ['openid', 'email', 'profile'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    conformIdTokenClaims: !emailInIdToken,
    findAccount: (_ctx, id) => account(id),
    cookies: { keys: [randomBytes(32).toString('hex')] },
    features: { devInteractions: { enabled: true } },
  });
  // Errors the provider sends to the client are worth seeing in the test log.
  provider.on('server_error', (_ctx, error) => console.error('idp server_error', error));
  provider.on('grant.error', (_ctx, error) => console.error('idp grant.error', error.message, error.error_description ?? ''));
  provider.on('authorization.error', (_ctx, error) => console.error('idp authorization.error', error.message, error.error_description ?? ''));
  const callback = provider.callback();
  server.on('request', callback);
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

process.stdin.on('data', () => {});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
