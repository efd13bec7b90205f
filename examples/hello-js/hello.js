// A wasi:http component in JavaScript, built with ComponentizeJS
// (StarlingMonkey). The engine turns each incoming request into a `fetch`
// event; wasmgate passes bindings such as GREETING as environment variables,
// which StarlingMonkey does not expose (there is no `process.env`), so they
// are read through the wasi:cli/environment import declared in wit/world.wit.
import { getEnvironment } from 'wasi:cli/environment@0.2.10';

function env(name) {
  const pair = getEnvironment().find(([key]) => key === name);
  return pair ? pair[1] : undefined;
}

addEventListener('fetch', (event) => {
  let body = 'Hello from JavaScript!\n';
  const greeting = env('GREETING');
  if (greeting !== undefined) body += `greeting: ${greeting}\n`;
  event.respondWith(
    new Response(body, { headers: { 'content-type': 'text/plain' } }),
  );
});
