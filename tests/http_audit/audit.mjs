// Runs graphql-http's auditServer against the URL given as the only argument and prints one
// JSON array of {id, name, status, reason, statusCode} on stdout (status: ok, or notice, warn
// and error for a failed MAY, SHOULD and MUST).
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs http://host:port/graphql');
  process.exit(2);
}
const results = await auditServer({ url });
console.log(
  JSON.stringify(
    results.map((result) => ({
      id: result.id,
      name: result.name,
      status: result.status,
      reason: result.reason ?? null,
      statusCode: result.response ? result.response.status : null,
    })),
  ),
);
