// Module resolution hooks of use-build.mjs.
export async function resolve(specifier, context, next) {
  if (specifier === '../src/herald.js' && /\/test\/[^/]+$/.test(context.parentURL ?? '')) {
    return { url: new URL('./build-entry.mjs', import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
