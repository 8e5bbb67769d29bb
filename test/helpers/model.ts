// A byte-exact model of a disk, and deterministic pseudo-random data to check against it.
import { createHash } from 'node:crypto'

// xorshift32: reproducible from the seed printed by a failing test.
export function rng (seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9
  return () => {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    return x / 0x100000000
  }
}

export function randomBytes (rand: () => number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) b[i] = (rand() * 256) | 0
  return b
}

export function sha256 (data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

// `count` random writes (1 byte to maxLen, anywhere) applied to the model; returns them so the
// test can apply the same to the disk.
export function randomWrites (model: Buffer, rand: () => number, count: number, maxLen: number): Array<{ off: number, data: Buffer }> {
  const out = []
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(rand() * maxLen)
    const off = Math.floor(rand() * (model.length - len))
    const data = randomBytes(rand, len)
    data.copy(model, off)
    out.push({ off, data })
  }
  return out
}
