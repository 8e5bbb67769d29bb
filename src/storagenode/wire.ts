// With io-codec.ts (the data path's messages and their codec), the only module that knows the
// storage protocol's message shapes. It loads proto/ukai/storage/v1/storage.proto at runtime and
// states, by hand, the TS shape of every message as @grpc/proto-loader hands it over (camelCase
// fields, uint64 as number, bytes as Buffer).
import * as path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { packageRoot } from '../package-root'
import { installFrameRoom } from './grpc-frame-room'
import {
  IoRequestIn, IoRequestOut, IoResponse, decodeIoRequest, decodeIoRequestBatch, decodeIoResponse, decodeIoResponseBatch,
  encodeIoRequest, encodeIoRequestBatch, encodeIoResponse, encodeIoResponseBatch
} from './io-codec'

// A request or response carries at most one 4 MiB payload; 8 MiB leaves ample room for framing.
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024
export const MAX_IO_BYTES = 4 * 1024 * 1024
// An IoBatch message is closed once its payloads reach this: a batch is under twice this or one
// request of MAX_IO_BYTES alone, well inside MAX_MESSAGE_BYTES. Small requests gain from sharing a
// message (a 4 KiB write's framing costs as much as its bytes); 1 MiB ones gain nothing.
export const IO_BATCH_BYTES = 1024 * 1024
// Name of the trailer that carries the UkaiError code of a failed unary call.
export const ERROR_CODE_METADATA_KEY = 'ukai-code'

// The data path's message shapes and codec live in io-codec.ts.
export type { ReadOp, WriteOp, FlushOp, DiscardOp, IoRequestOut, IoRequestIn, IoResponse } from './io-codec'
export { decodeIoRequest, decodeIoRequestBatch, decodeIoResponse, decodeIoResponseBatch, encodeIoRequest, encodeIoRequestBatch, encodeIoResponse, encodeIoResponseBatch } from './io-codec'

export interface FenceRequest { diskUuid: string, leaseEpoch: number }
export interface FenceResponse { leaseEpoch: number }
export interface BlockInfoRequest { diskUuid: string, block: number }
export interface BlockVersion { epoch: number, allocatedBytes: number, sizeBytes: number }
export interface BlockInfoResponse { versions: BlockVersion[] }
export interface ListBlocksRequest { diskUuid: string }
export interface BlockEpochs { block: number, epochs: number[] }
export interface ListBlocksResponse { blocks: BlockEpochs[] }
export interface DeleteDiskRequest { diskUuid: string, leaseEpoch: number }
export interface DeleteDiskResponse { freedBytes: number }
export interface DeleteBlocksRequest { diskUuid: string, blocks: number[] }
export interface DeleteBlocksResponse { freedBytes: number }
export interface PullBlockRequest { diskUuid: string, block: number, sourceNode: string, sourceAddress: string, leaseEpoch: number, probe?: boolean }
export interface PullBlockResponse { bytes: number }
export interface PruneVersionsRequest { diskUuid: string, keepEpochs: number[], dropNewer: boolean, leaseEpoch: number }
export interface PruneVersionsResponse { freedBytes: number, versionsRemoved: number }
export interface CopyBaseRequest { diskUuid: string, block: number, epoch: number, baseUuid: string, baseEpoch: number, sourceNode: string, sourceAddress: string, leaseEpoch: number }
export type CopyBaseResult = 'present' | 'copied' | 'absent'
export interface CopyBaseResponse { result: CopyBaseResult, bytes: number }
export interface LocateBlockRequest { diskUuid: string, block: number, epoch: number }
export interface LocateBlockResponse { found: boolean, epoch: number, path: string }
export type StatRequest = Record<string, never>
// The Io stream memory accounting (io-budget.ts) a node reports in Stat.
export interface IoBudgetStat {
  ioHeldBytes: number       // charged to Io requests now (admitted, reply not yet sent)
  ioHeldPeakBytes: number   // the most charged at once since the node started
  ioBudgetBytes: number     // the node's Io memory budget
  ioWaitingStreams: number  // streams whose next request waits for the node budget
}

export interface StatResponse extends IoBudgetStat { nodeId: string, capacityBytes: number, usedBytes: number, freeBytes: number, fsyncCount: number }
export interface ScrubRequest { diskUuid: string, digests: boolean }
export interface ScrubFinding { diskUuid: string, block: number, epoch: number, page: number, foundAtMs: number }
export interface ScrubDigest { block: number, epoch: number, digest: number }
export interface ScrubResponse {
  versionsChecked: number
  bytesChecked: number
  adopted: number
  bad: ScrubFinding[]
  digests: ScrubDigest[]
  passes: number           // background passes completed since the node started
  lastPassEndMs: number
}
export type PingRequest = Record<string, never>
export type PingResponse = Record<string, never>

// Server handler names in the shape grpc-js expects (method names as in the .proto).
export interface StorageHandlers extends grpc.UntypedServiceImplementation {
  Io: grpc.handleBidiStreamingCall<IoRequestIn, IoResponse>
  IoBatch: grpc.handleBidiStreamingCall<IoRequestIn[], IoResponse[]>
  Fence: grpc.handleUnaryCall<FenceRequest, FenceResponse>
  BlockInfo: grpc.handleUnaryCall<BlockInfoRequest, BlockInfoResponse>
  ListBlocks: grpc.handleUnaryCall<ListBlocksRequest, ListBlocksResponse>
  DeleteDisk: grpc.handleUnaryCall<DeleteDiskRequest, DeleteDiskResponse>
  DeleteBlocks: grpc.handleUnaryCall<DeleteBlocksRequest, DeleteBlocksResponse>
  Stat: grpc.handleUnaryCall<StatRequest, StatResponse>
  PullBlock: grpc.handleUnaryCall<PullBlockRequest, PullBlockResponse>
  PruneVersions: grpc.handleUnaryCall<PruneVersionsRequest, PruneVersionsResponse>
  CopyBase: grpc.handleUnaryCall<CopyBaseRequest, CopyBaseResponse>
  LocateBlock: grpc.handleUnaryCall<LocateBlockRequest, LocateBlockResponse>
  Ping: grpc.handleUnaryCall<PingRequest, PingResponse>
  Scrub: grpc.handleUnaryCall<ScrubRequest, ScrubResponse>
}

export const PROTO_RELATIVE_PATH = path.join('proto', 'ukai', 'storage', 'v1', 'storage.proto')

function findProtoFile (): string {
  return path.join(packageRoot(), PROTO_RELATIVE_PATH)
}

let cached: grpc.ServiceClientConstructor | undefined

// The generated service: `.service` is the definition for server.addService, `new` makes a client.
export function storageService (): grpc.ServiceClientConstructor {
  if (cached !== undefined) return cached
  installFrameRoom()  // the codec's messages framed without a copy (grpc-frame-room.ts)
  const def = protoLoader.loadSync(findProtoFile(), { keepCase: false, longs: Number, defaults: true, oneofs: true })
  // The Io stream's messages go through the hand-written codec (same bytes, fewer copies).
  const svc = def['ukai.storage.v1.Storage'] as protoLoader.ServiceDefinition
  const io = svc.Io as protoLoader.MethodDefinition<IoRequestOut, IoResponse, IoRequestIn, IoResponse>
  io.requestSerialize = encodeIoRequest
  io.requestDeserialize = decodeIoRequest
  io.responseSerialize = encodeIoResponse
  io.responseDeserialize = decodeIoResponse
  const batch = svc.IoBatch as protoLoader.MethodDefinition<IoRequestOut[], IoResponse[], IoRequestIn[], IoResponse[]>
  batch.requestSerialize = encodeIoRequestBatch
  batch.requestDeserialize = decodeIoRequestBatch
  batch.responseSerialize = encodeIoResponseBatch
  batch.responseDeserialize = decodeIoResponseBatch
  const pkg = grpc.loadPackageDefinition(def) as unknown as { ukai: { storage: { v1: { Storage: grpc.ServiceClientConstructor } } } }
  cached = pkg.ukai.storage.v1.Storage
  return cached
}
