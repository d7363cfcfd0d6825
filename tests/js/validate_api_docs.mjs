// Validates coachwire's API documents with the official validators:
//   node validate_api_docs.mjs <asyncapi.json path or URL> <openapi.json path or URL>
// The AsyncAPI document must parse with no diagnostic of severity error (@asyncapi/parser
// runs the spec's JSON Schema and its Spectral rules); the OpenAPI document must pass
// @apidevtools/swagger-parser's validate() (the 3.1 schema plus its own checks).
// Prints one JSON line, { valid, asyncapi: {...}, openapi: {...} }, and exits 1 when either
// document is invalid, 2 when the arguments are wrong or a document cannot be read.

import { readFile } from 'node:fs/promises';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';
import SwaggerParser from '@apidevtools/swagger-parser';

async function load(source) {
  if (/^https?:\/\//.test(source)) {
    const response = await fetch(source);
    if (!response.ok) throw new Error(`GET ${source}: ${response.status}`);
    return response.text();
  }
  return readFile(source, 'utf8');
}

// Spectral's range is zero-based; one-based lines read better next to a pretty-printed file.
function describe(diagnostic) {
  return {
    code: diagnostic.code,
    message: diagnostic.message,
    path: diagnostic.path.join('/'),
    line: diagnostic.range?.start?.line + 1,
  };
}

async function checkAsyncApi(text, source) {
  const { document, diagnostics } = await new Parser().parse(text, { source });
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).map(describe);
  const warnings = diagnostics
    .filter((d) => d.severity === DiagnosticSeverity.Warning)
    .map(describe);
  return {
    valid: errors.length === 0 && document !== undefined,
    version: document?.version(),
    errors,
    warnings,
  };
}

async function checkOpenApi(text) {
  try {
    // validate() dereferences in place: hand it its own copy.
    const api = await SwaggerParser.validate(JSON.parse(text));
    return { valid: true, version: api.openapi, errors: [] };
  } catch (error) {
    return { valid: false, errors: [String(error.message ?? error)] };
  }
}

async function main() {
  const [asyncapiSource, openapiSource] = process.argv.slice(2);
  if (!asyncapiSource || !openapiSource) {
    console.error('usage: validate_api_docs.mjs <asyncapi.json> <openapi.json>');
    process.exit(2);
  }
  let texts;
  try {
    texts = await Promise.all([load(asyncapiSource), load(openapiSource)]);
  } catch (error) {
    console.log(JSON.stringify({ valid: false, error: String(error.message ?? error) }));
    process.exit(2);
  }
  const asyncapi = await checkAsyncApi(texts[0], asyncapiSource);
  const openapi = await checkOpenApi(texts[1]);
  const valid = asyncapi.valid && openapi.valid;
  console.log(JSON.stringify({ valid, asyncapi, openapi }));
  process.exit(valid ? 0 : 1);
}

await main();
