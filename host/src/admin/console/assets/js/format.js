// How times, durations and digests read on the page.

/** A Unix time in seconds as `2026-12-04 21:50:10Z`, or an em dash. */
export function time(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  return new Date(seconds * 1000).toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}

/** The same for milliseconds, with them. */
export function timeMs(ms) {
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 23) + 'Z';
}

/** A number of seconds as `1h 30m`. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const s = Math.abs(Math.round(seconds));
  const units = [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]];
  const parts = [];
  let rest = s;
  for (const [unit, size] of units) {
    if (rest >= size && parts.length < 2) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.length ? parts.join(' ') : '0s';
}

/** `seconds` (a Unix time) relative to now: `in 59m` or `3m ago`. */
export function relative(seconds) {
  if (seconds === null || seconds === undefined) return '';
  const delta = seconds - Date.now() / 1000;
  return delta >= 0 ? `in ${duration(delta)}` : `${duration(delta)} ago`;
}

/** The first 12 hex digits of a SHA-256. */
export function shortDigest(hex) {
  return hex ? hex.slice(0, 12) : '—';
}

/** `count` and `noun`, plural unless the count is one: `3 records`. */
export function counted(count, noun) {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

/** The items of a comma-separated list a person typed, trimmed, empty ones dropped. */
export function commaList(text) {
  return text.split(',').map((item) => item.trim()).filter(Boolean);
}

/** The time now as `21:50:10Z`. */
export function clock() {
  return `${new Date().toISOString().slice(11, 19)}Z`;
}

/** Operations as the API lists them, joined. */
export function operations(list) {
  return list && list.length ? list.join(', ') : 'none';
}
