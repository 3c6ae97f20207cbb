/** Response headers as undici gives them: lower-case names, a list when a header came twice. */
export type HeaderMap = Record<string, string | string[] | undefined>;

/** The (first) value of a response header; `name` in any case. */
export function headerValue(h: HeaderMap, name: string): string | undefined {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}
