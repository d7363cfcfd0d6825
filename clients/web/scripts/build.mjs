// Bundles the client library (clients/js/src) and its dependencies (socket.io-client,
// uuid) into one ES module the page loads from its own origin: the page needs nothing
// from the internet, and its CSP allows no inline script and no import map.
import { build } from "esbuild";

await build({
  entryPoints: [new URL("../../js/src/index.ts", import.meta.url).pathname],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  sourcemap: true,
  outfile: new URL("../public/vendor/coachwire.js", import.meta.url).pathname,
  logLevel: "warning",
});
console.log("built public/vendor/coachwire.js");
