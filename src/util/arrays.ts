// Array helpers for data of unbounded size. `a.push(...b)` and
// `Math.max(...b)` pass every element as a call argument, which overflows
// the stack for large arrays (tens of thousands of elements); these loop.

/** Appends every element of `items` to `target`; returns `target`. */
export function appendAll<T>(target: T[], items: Iterable<T>): T[] {
  for (const x of items) target.push(x);
  return target;
}

/** The largest of `items`, or `empty` when there is none. */
export function maxOf(items: Iterable<number>, empty = -Infinity): number {
  let m = empty;
  for (const x of items) if (x > m) m = x;
  return m;
}

/** Freezes an object and everything reachable from it (plain objects and arrays); returns it. */
export function deepFreeze<T>(x: T): T {
  if (x !== null && typeof x === 'object' && !Object.isFrozen(x)) {
    Object.freeze(x);
    for (const v of Object.values(x)) deepFreeze(v);
  }
  return x;
}
