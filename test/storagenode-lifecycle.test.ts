// The storage server's lifecycle (src/lib/lifecycle.ts): close() drains once however often it is
// called, destroy(err) force-shuts gRPC and ends a draining close early, a close after destroy
// returns at once; calls after either fail UNAVAILABLE; what was written is there after a restart.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { StorageClient } from '../src/storagenode/client'
import { StorageServer, startStorageServer } from '../src/storagenode/server'

const UUID = '7c1f0a42-5d3e-4b6a-8f90-333333333333'

function tempDir (t: { teardown: (fn: () => unknown) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-lifecycle-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function readBack (dataDir: string, length: number): Promise<Buffer> {
  const server = await startStorageServer({ nodeId: 'node-a', dataDir, listen: '127.0.0.1:0' })
  const client = new StorageClient({ nodeId: 'node-a', address: server.address })
  try {
    return await client.read({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, length })
  } finally {
    await client.close()
    await server.close(0)
  }
}

// A server with one acknowledged (not flushed) write, and its client.
async function serverWithWrite (t: { teardown: (fn: () => unknown) => void }, fill: number): Promise<{ dir: string, server: StorageServer, client: StorageClient, data: Buffer }> {
  const dir = tempDir(t)
  const server = await startStorageServer({ nodeId: 'node-a', dataDir: dir, listen: '127.0.0.1:0' })
  const client = new StorageClient({ nodeId: 'node-a', address: server.address })
  t.teardown(async () => { await client.close() })
  const data = Buffer.alloc(4096, fill)
  await client.write({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, data, leaseEpoch: 1 })
  return { dir, server, client, data }
}

t.test('close twice at once: one drain, both resolve, later calls refused', async t => {
  const { dir, server, client, data } = await serverWithWrite(t, 7)
  await Promise.all([server.close(), server.close()])
  await server.close()
  await t.rejects(client.stat(), { code: 'UNAVAILABLE' })
  t.same(await readBack(dir, data.length), data, 'the write is there after a restart')
})

t.test('destroy during close ends it; close after destroy returns at once', async t => {
  const { dir, server, client, data } = await serverWithWrite(t, 9)
  const started = Date.now()
  const closing = server.close(60_000)
  const destroying = server.destroy(new Error('deadline'))
  await Promise.all([closing, destroying])
  await server.close()
  await server.destroy()
  t.ok(Date.now() - started < 30_000, `both resolved, in ${Date.now() - started} ms`)
  await t.rejects(client.stat(), { code: 'UNAVAILABLE' })
  t.same(await readBack(dir, data.length), data, 'an acknowledged write is there after a restart (the start syncs the data dir)')
})
