// fuse-native ships no type declarations; this covers what src/agent/fuse-adapter.ts uses.
// The mount loads the copy scripts/build-native.sh builds (see native/fuse-native), which adds
// the `fallocate(path, fh, mode, offset, length, cb)` operation.
declare module 'fuse-native' {
  class Fuse {
    constructor (mnt: string, ops: object, opts?: object)
    mount (cb: (err: Error | null) => void): void
    unmount (cb: (err: Error | null) => void): void
    static unmount (mnt: string, cb: (err: Error | null) => void): void
    static readonly ENOENT: number
    static readonly ENOTDIR: number
    static readonly EACCES: number
    static readonly EIO: number
  }
  export = Fuse
}
