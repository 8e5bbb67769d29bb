// Whole-buffer writes and a file's allocation, for the block files (version-files.ts owns their
// I/O; thin copies and staged versions write through these too): a pwrite may write less than
// asked, so both loop until every byte is written.
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'

export async function allocatedBytesOf (file: string): Promise<number> {
  return (await fsp.stat(file)).blocks * 512
}

export async function writeAll (fh: fsp.FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done)
    done += bytesWritten
  }
}

export function writeAllSync (fd: number, data: Buffer, position: number): void {
  let done = 0
  while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done, position + done)
}
