// Splits a byte range of a disk into per-block pieces.
export interface BlockPiece {
  block: number
  offsetInBlock: number
  length: number
  offsetInRange: number // where this piece starts within the caller's buffer
}

export function splitRange (offset: number, length: number, blockSizeBytes: number): BlockPiece[] {
  const out: BlockPiece[] = []
  let pos = offset
  const end = offset + length
  while (pos < end) {
    const block = Math.floor(pos / blockSizeBytes)
    const offsetInBlock = pos - block * blockSizeBytes
    const len = Math.min(blockSizeBytes - offsetInBlock, end - pos)
    out.push({ block, offsetInBlock, length: len, offsetInRange: pos - offset })
    pos += len
  }
  return out
}

export function blockCountFor (sizeBytes: number, blockSizeBytes: number): number {
  return Math.ceil(sizeBytes / blockSizeBytes)
}
