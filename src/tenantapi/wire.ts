// The tenant API's messages (proto/ukai/tenant/v1/tenant.proto), loaded at runtime as the
// storage protocol is, with the TS shape of every request as @grpc/proto-loader hands it over.
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { packageRoot } from '../package-root'

export interface CreateDiskRequest { name: string, sizeBytes: number, blockSizeBytes: number, replicas: number, site: string, tenant: string }
export interface ResizeDiskRequest { disk: string, sizeBytes: number }
export interface DiskRequest { disk: string, withSnapshots: boolean }
export type ListRequest = Record<string, never>
export interface SnapshotRequest { disk: string, snapshot: string }
export interface CloneRequest { disk: string, snapshot: string, name: string, site: string }
export interface RelocateRequest { disk: string, site: string, rateBytesPerSec: number }
export interface JsonReply { json: string }
export interface ExportRequest { disk: string, snapshot: string, from: string, format: string, site: string, positional: boolean }
export interface ImportStart { disk: string, incremental: boolean, format: string, site: string, blockSizeBytes: number, replicas: number, tenant: string, input: string }

// The streamed messages, as proto-loader hands them over with `oneofs: true` (kind: the field set).
export type ExportChunk =
  | { kind: 'startTotalBytes', startTotalBytes: number }
  | { kind: 'data', data: { data: Buffer, positional: boolean, offset: number } }
  | { kind: 'zeroBytes', zeroBytes: number }
  | { kind: 'doneBytes', doneBytes: number }
  | { kind: 'finish', finish: { hasSize: boolean, sizeBytes: number } }
  | { kind: 'summaryJson', summaryJson: string }
export type ImportProgress =
  | { kind: 'startTotalBytes', startTotalBytes: number }
  | { kind: 'appliedBytes', appliedBytes: number }
  | { kind: 'summaryJson', summaryJson: string }
export type ImportChunk =
  | { kind: 'start', start: ImportStart }
  | { kind: 'data', data: Buffer }
  | { kind: 'end', end: boolean }

// Bytes in one streamed message: well under gRPC's 4 MiB default, and what bounds the memory a
// stream holds per message in flight.
export const STREAM_CHUNK_BYTES = 1024 * 1024

export interface TenantApiRequests {
  CreateDisk: CreateDiskRequest
  ResizeDisk: ResizeDiskRequest
  DeleteDisk: DiskRequest
  DiskInfo: DiskRequest
  ListDisks: ListRequest
  CreateSnapshot: SnapshotRequest
  ListSnapshots: DiskRequest
  DeleteSnapshot: SnapshotRequest
  Clone: CloneRequest
  Relocate: RelocateRequest
}
export type TenantApiMethod = keyof TenantApiRequests
// The unary verbs (Export and Import stream: src/tenantapi/streams.ts).
export const TENANT_API_METHODS: readonly TenantApiMethod[] = ['CreateDisk', 'ResizeDisk', 'DeleteDisk', 'DiskInfo', 'ListDisks', 'CreateSnapshot', 'ListSnapshots', 'DeleteSnapshot', 'Clone', 'Relocate']

export const TENANT_PROTO_RELATIVE_PATH = path.join('proto', 'ukai', 'tenant', 'v1', 'tenant.proto')

let cached: grpc.ServiceClientConstructor | undefined

// The service: `.service` for server.addService, `new` for a client.
export function tenantApiService (): grpc.ServiceClientConstructor {
  if (cached !== undefined) return cached
  const def = protoLoader.loadSync(path.join(packageRoot(), TENANT_PROTO_RELATIVE_PATH), { keepCase: false, longs: Number, defaults: true, oneofs: true })
  const pkg = grpc.loadPackageDefinition(def) as unknown as { ukai: { tenant: { v1: { TenantApi: grpc.ServiceClientConstructor } } } }
  cached = pkg.ukai.tenant.v1.TenantApi
  return cached
}
