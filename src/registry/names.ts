/**
 * The registry's one name rule: 1–64 of `[a-z0-9_-]`, starting with a letter or digit. Package
 * names follow it, and so do user names (they stand beside package names in owner lists and
 * job payloads). Safe as a URL path segment and as a bucket key segment without escaping.
 * (The crates.io index has its own, wider rule: registry/index-format.ts.)
 */

/** The rule unanchored, for patterns that embed a name (an archive file name). */
export const PACKAGE_NAME_PATTERN = '[a-z0-9][a-z0-9_-]{0,63}';

/** A whole package name. */
export const PACKAGE_NAME_RE = new RegExp(`^${PACKAGE_NAME_PATTERN}$`);

/** A whole user name: the package-name rule. */
export const USER_NAME_RE = PACKAGE_NAME_RE;
