// The only module that knows the storage protocol's message shapes. It loads
// proto/ukai/storage/v1/storage.proto at runtime and states, by hand, the TS shape of every
// message as @grpc/proto-loader hands it over (camelCase fields, uint64 as number, bytes as Buffer,
// the IoRequest oneof named in `op`).
import * as fs from 'node:fs'
import * as path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'

// A request or response carries at most one 4 MiB payload; 8 MiB leaves ample room for framing.
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024
export const MAX_IO_BYTES = 4 * 1024 * 1024
// Name of the trailer that carries the UkaiError code of a failed unary call.
export const ERROR_CODE_METADATA_KEY = 'ukai-code'

export interface ReadOp { diskUuid: string, block: number, epoch: number, offset: number, length: number }
export interface WriteOp { diskUuid: string, block: number, epoch: number, offset: number, data: Buffer, leaseEpoch: number }
export interface FlushOp { diskUuid: string, leaseEpoch: number }
export interface DiscardOp { diskUuid: string, block: number, epoch: number, offset: number, length: number, leaseEpoch: number }

// What the client sends: exactly one op field set.
export type IoRequestOut =
  | { id: number, read: ReadOp }
  | { id: number, write: WriteOp }
  | { id: number, flush: FlushOp }
  | { id: number, discard: DiscardOp }

// What the server receives: proto-loader fills in every field with defaults and names the set one.
export interface IoRequestIn {
  id: number
  op?: 'read' | 'write' | 'flush' | 'discard'
  read?: ReadOp
  write?: WriteOp
  flush?: FlushOp
  discard?: DiscardOp
}

export interface IoResponse { id: number, code: string, message: string, data: Buffer }

export interface FenceRequest { diskUuid: string, leaseEpoch: number }
export interface FenceResponse { leaseEpoch: number }
export interface BlockInfoRequest { diskUuid: string, block: number }
export interface BlockVersion { epoch: number, allocatedBytes: number, sizeBytes: number }
export interface BlockInfoResponse { versions: BlockVersion[] }
export interface ListBlocksRequest { diskUuid: string }
export interface BlockEpochs { block: number, epochs: number[] }
export interface ListBlocksResponse { blocks: BlockEpochs[] }
export interface DeleteDiskRequest { diskUuid: string }
export interface DeleteDiskResponse { freedBytes: number }
export interface DeleteBlocksRequest { diskUuid: string, blocks: number[] }
export interface DeleteBlocksResponse { freedBytes: number }
export type StatRequest = Record<string, never>
export interface StatResponse { nodeId: string, capacityBytes: number, usedBytes: number, freeBytes: number }

// Server handler names in the shape grpc-js expects (method names as in the .proto).
export interface StorageHandlers extends grpc.UntypedServiceImplementation {
  Io: grpc.handleBidiStreamingCall<IoRequestIn, IoResponse>
  Fence: grpc.handleUnaryCall<FenceRequest, FenceResponse>
  BlockInfo: grpc.handleUnaryCall<BlockInfoRequest, BlockInfoResponse>
  ListBlocks: grpc.handleUnaryCall<ListBlocksRequest, ListBlocksResponse>
  DeleteDisk: grpc.handleUnaryCall<DeleteDiskRequest, DeleteDiskResponse>
  DeleteBlocks: grpc.handleUnaryCall<DeleteBlocksRequest, DeleteBlocksResponse>
  Stat: grpc.handleUnaryCall<StatRequest, StatResponse>
}

export const PROTO_RELATIVE_PATH = path.join('proto', 'ukai', 'storage', 'v1', 'storage.proto')

// Works from src/ (tap runs TS directly) and from dist/src/ (compiled): walk up to the repo root.
function findProtoFile (): string {
  let dir = __dirname
  for (let i = 0; i < 6; i++) {
    const candidate = path.join(dir, PROTO_RELATIVE_PATH)
    if (fs.existsSync(candidate)) return candidate
    dir = path.dirname(dir)
  }
  throw new Error(`cannot find ${PROTO_RELATIVE_PATH} above ${__dirname}`)
}

let cached: grpc.ServiceClientConstructor | undefined

// The generated service: `.service` is the definition for server.addService, `new` makes a client.
export function storageService (): grpc.ServiceClientConstructor {
  if (cached !== undefined) return cached
  const def = protoLoader.loadSync(findProtoFile(), { keepCase: false, longs: Number, defaults: true, oneofs: true })
  const pkg = grpc.loadPackageDefinition(def) as unknown as { ukai: { storage: { v1: { Storage: grpc.ServiceClientConstructor } } } }
  cached = pkg.ukai.storage.v1.Storage
  return cached
}
