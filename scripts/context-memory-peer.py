#!/usr/bin/env python3
"""Context memory in plain Python: the peer of usan's `context_memory` detector.

The same method as crates/core/src/detector/context_memory.rs, step for
step (levels over the recent range, hashed pattern memory in two
generations, surprise runs judged against their own history), written the
way NAB's Python detectors are written: one value at a time, standard
library only. It exists to measure usan's speed against the method's
Python form, and to check usan's scores against an independent reading.

Usage:
    python3 scripts/context-memory-peer.py [--rows N] [--csv FILE] [--scores OUT]

Without --csv it scores N standard-normal values with a sine of period 96
(seed 0). --csv reads NAB's `timestamp,value` files. --scores writes one
score per line. Prints values/s.
"""

import argparse
import collections
import math
import random
import time

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
SPREAD_FLOOR = 0.1


def mix(h):
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & MASK
    return h ^ (h >> 31)


def minus_log10_normal_tail(z):
    if z < 8.0:
        return -math.log10(0.5 * math.erfc(z / math.sqrt(2.0)))
    z2, z4 = z * z, z * z * z * z
    ln_tail = -0.5 * z2 - math.log(z * math.sqrt(2.0 * math.pi)) + math.log(1.0 - 1.0 / z2 + 3.0 / z4)
    return -ln_tail / math.log(10.0)


class Levels:
    def __init__(self, window, levels):
        self.recent = collections.deque()
        self.window, self.levels = window, levels
        self.every = max(window // 8, 1)
        self.low = self.high = 0.0
        self.since = 0

    def level(self, x):
        count = float(self.levels)
        span = max(self.high - self.low, 1e-12 * max(abs(self.high), abs(self.low), 1.0))
        at = min(max(math.floor((x - self.low) / span * count), -count), 2.0 * count - 1.0)
        return int(at + count)

    def push(self, x):
        if len(self.recent) == self.window:
            self.recent.popleft()
        self.recent.append(x)
        self.since += 1
        if self.since >= self.every or len(self.recent) < self.every:
            self.low, self.high = min(self.recent), max(self.recent)
            self.since = 0


class ContextMemory:
    def __init__(self, window=1000, levels=4, order=3, memory=4096, recent=10, history=2000, warm_up=300):
        self.levels, self.order, self.memory = levels, order, memory
        self.recent, self.history, self.warm_up = recent, history, warm_up
        self.values, self.steps = Levels(window, levels), Levels(window, levels)
        self.last = None
        self.symbols = collections.deque()
        slots = 1 << (memory - 1).bit_length() << 5
        self.shift = 64 - (slots.bit_length() - 1)
        self.newer, self.older = bytearray(slots), bytearray(slots)
        self.stored = 0
        self.surprises = collections.deque()
        self.recent_sum = 0
        self.sums = collections.deque()
        self.total = self.total_squares = 0
        self.counts = collections.Counter()
        self.seen = 0

    def remember(self, h):
        slot = h >> self.shift
        seen = self.newer[slot] or self.older[slot]
        if not self.newer[slot]:
            self.newer[slot] = 1
            self.stored += 1
            if self.stored >= self.memory:
                self.older = self.newer
                self.newer = bytearray(len(self.older))
                self.stored = 0
        return seen

    def score(self, x):
        step = 0.0 if self.last is None else x - self.last
        symbol = self.values.level(x) * 3 * self.levels + self.steps.level(step)
        h = mix((symbol + GOLDEN) & MASK)
        surprise = 0 if self.remember(h) else 1
        n = len(self.symbols)
        for o in range(n):
            previous = self.symbols[n - 1 - o]
            h = mix(h ^ ((((previous + 1) * GOLDEN) & MASK) + o) & MASK)
            surprise += 0 if self.remember(h) else 1
        surprise += self.order - n
        self.symbols.append(symbol)
        if len(self.symbols) > self.order:
            self.symbols.popleft()
        self.values.push(x)
        if self.last is not None:
            self.steps.push(step)
        self.last = x
        self.seen += 1
        return self.likelihood(surprise)

    def likelihood(self, surprise):
        self.surprises.append(surprise)
        self.recent_sum += surprise
        if len(self.surprises) > self.recent:
            self.recent_sum -= self.surprises.popleft()
        score = 0.0
        if self.seen > self.warm_up and len(self.sums) >= 2:
            n = len(self.sums)
            mean = self.total / n
            spread = max(self.total_squares * n - self.total * self.total, 0)
            std = max(math.sqrt(spread) / n, SPREAD_FLOOR * self.recent)
            score = minus_log10_normal_tail((self.recent_sum - mean) / std)
            reached = sum(c for s, c in self.counts.items() if s >= self.recent_sum)
            if reached:
                score = min(score, -math.log10(reached / (n + 1.0)))
        if len(self.surprises) == self.recent:
            s = self.recent_sum
            self.sums.append(s)
            self.total += s
            self.total_squares += s * s
            self.counts[s] += 1
            if len(self.sums) > self.history:
                old = self.sums.popleft()
                self.total -= old
                self.total_squares -= old * old
                self.counts[old] -= 1
        return score


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--csv")
    parser.add_argument("--scores")
    args = parser.parse_args()
    if args.csv:
        with open(args.csv) as f:
            next(f)
            values = [float(line.split(",")[1]) for line in f if line.strip()]
    else:
        rng = random.Random(0)
        values = [math.sin(i / 96.0 * 2.0 * math.pi) + rng.gauss(0.0, 1.0) for i in range(args.rows)]
    detector = ContextMemory()
    start = time.perf_counter()
    scores = [detector.score(v) for v in values]
    seconds = time.perf_counter() - start
    print(f"context memory, Python {'.'.join(map(str, __import__('sys').version_info[:3]))}: "
          f"{len(values)} values in {seconds:.3f} s, {len(values) / seconds:,.0f} values/s")
    if args.scores:
        with open(args.scores, "w") as f:
            f.writelines(f"{s!r}\n" for s in scores)


if __name__ == "__main__":
    main()
