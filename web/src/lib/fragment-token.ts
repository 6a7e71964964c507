/**
 * The reader's token from the page address's fragment, `#token=<JWT or read token>`, or
 * undefined (docs/auth.md, "The web pages and private topics"). A fragment is never sent in
 * an HTTP request, so the token stays out of request lines, access logs and `Referer`. Read
 * once, when a page's script starts.
 */
export function fragmentToken(): string | undefined {
  return new URLSearchParams(location.hash.slice(1)).get('token') || undefined;
}
