// The OAuth 2.0 authorization server of egress's token tests: oidc-provider (the certified
// Node.js OpenID provider), configured for the client credentials grant (RFC 6749 4.4).
// Token issuance, client authentication (client_secret_basic and client_secret_post), expiry
// and revocation are all the provider's own; this file only configures it and adds what a test
// needs beside it:
//
// - GET  /api/entities/:id  a protected resource: it looks the bearer token up in the provider's
//                           own store and answers 401 with `WWW-Authenticate: Bearer
//                           error="invalid_token"` (RFC 6750 3.1) when the provider does not know
//                           it (never issued, expired or revoked), else 200 with a JSON entity.
// - GET  /test/stats        how many token requests (POST /token) the provider received.
// - POST /test/revoke       revokes (destroys in the provider's store) every token the resource
//                           has accepted, as RFC 7009 revocation does.
// - GET  /test/tokens       every token the resource has accepted (for the secrets test, which
//                           checks that none of them appears in egress's telemetry).
//
// Usage: node server.mjs <port> <token lifetime in seconds>. Environment: OAUTH_CLIENT_SECRET
// (the secret of both clients: `egress-basic` and `egress-post`), NPM_PREFIX (the npm prefix
// oidc-provider is installed under, by egress_tests::tools::npm_library).
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const modules = createRequire(`${process.env.NPM_PREFIX}/`);
const { default: Provider } = await import(pathToFileURL(modules.resolve('oidc-provider')).href);

const port = Number(process.argv[2]);
const ttl = Number(process.argv[3] ?? 60);
const secret = process.env.OAUTH_CLIENT_SECRET;
if (!port || !secret) {
  console.error('usage: OAUTH_CLIENT_SECRET=... node server.mjs <port> [ttl seconds]');
  process.exit(2);
}

const client = (id, method) => ({
  client_id: id,
  client_secret: secret,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: method,
  scope: 'entities:read entities:write',
});

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [client('egress-basic', 'client_secret_basic'), client('egress-post', 'client_secret_post')],
  scopes: ['entities:read', 'entities:write'],
  features: {
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    devInteractions: { enabled: false },
  },
  ttl: { ClientCredentials: ttl },
});

let tokenRequests = 0;
const accepted = new Set();
const everAccepted = new Set();

provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/token') {
    tokenRequests += 1;
    return next();
  }
  if (ctx.method === 'GET' && ctx.path === '/test/stats') {
    ctx.body = { token_requests: tokenRequests };
    return undefined;
  }
  if (ctx.method === 'GET' && ctx.path === '/test/tokens') {
    ctx.body = [...everAccepted];
    return undefined;
  }
  if (ctx.method === 'POST' && ctx.path === '/test/revoke') {
    for (const value of accepted) {
      const token = await provider.ClientCredentials.find(value);
      if (token) await token.destroy();
    }
    ctx.body = { revoked: accepted.size };
    accepted.clear();
    return undefined;
  }
  const entity = ctx.method === 'GET' && ctx.path.match(/^\/api\/entities\/([^/]+)$/);
  if (entity) {
    const header = ctx.get('authorization');
    const value = header.startsWith('Bearer ') ? header.slice(7) : '';
    const token = value ? await provider.ClientCredentials.find(value) : undefined;
    if (!token || token.isExpired) {
      ctx.status = 401;
      ctx.set('WWW-Authenticate', 'Bearer error="invalid_token", error_description="the access token is expired, revoked or unknown"');
      ctx.body = { error: 'invalid_token' };
      return undefined;
    }
    accepted.add(value);
    everAccepted.add(value);
    ctx.body = { id: entity[1], name: 'Ada' };
    return undefined;
  }
  return next();
});

provider.listen(port, '127.0.0.1');
