// The one gRPC status ⇄ UkaiError table (src/storagenode/status.ts): every code survives the trip
// server → client exactly (status + 'ukai-code' trailer); statuses the gRPC library produces on
// its own (no trailer) mean what the client has always read them as; and only an unreachable node
// reads as UNAVAILABLE — the client's hung-node watchdog counts every other answer as progress.
import * as grpc from '@grpc/grpc-js'
import t from 'tap'
import { UkaiError } from '../src/errors'
import { UKAI_ERROR_CODES, codeOfServiceError, codeOfStatus, isUkaiErrorCode, statusOfCode, toServiceError, trailerCode } from '../src/storagenode/status'

t.test('every code makes the round trip', async t => {
  t.ok(UKAI_ERROR_CODES.length >= 21, `${UKAI_ERROR_CODES.length} codes`)
  for (const code of UKAI_ERROR_CODES) {
    const sent = toServiceError(new UkaiError(code, `msg ${code}`))
    t.equal(sent.code, statusOfCode(code), `${code}: status ${grpc.status[statusOfCode(code)]}`)
    t.equal(sent.details, `msg ${code}`)
    const got = { code: sent.code as grpc.status, metadata: sent.metadata as grpc.Metadata }
    t.equal(trailerCode(got), code, `${code}: named by the trailer`)
    t.equal(codeOfServiceError(got), code, `${code}: decoded`)
    t.not(sent.code, grpc.status.OK, `${code}: never sent as OK`)
  }
})

t.test('statuses without a trailer (the gRPC library, a proxy)', async t => {
  const none = new grpc.Metadata()
  const read = (s: grpc.status): string => codeOfServiceError({ code: s, metadata: none })
  t.equal(read(grpc.status.DEADLINE_EXCEEDED), 'UNAVAILABLE')
  t.equal(read(grpc.status.CANCELLED), 'UNAVAILABLE')
  t.equal(read(grpc.status.UNAVAILABLE), 'UNAVAILABLE')
  t.equal(read(grpc.status.RESOURCE_EXHAUSTED), 'BAD_ARGUMENT', 'a message over the size limit, not a full node')
  t.equal(read(grpc.status.INVALID_ARGUMENT), 'BAD_ARGUMENT')
  t.equal(read(grpc.status.NOT_FOUND), 'NOT_FOUND')
  t.equal(read(grpc.status.FAILED_PRECONDITION), 'FENCED')
  t.equal(read(grpc.status.OUT_OF_RANGE), 'OUT_OF_RANGE')
  t.equal(read(grpc.status.INTERNAL), 'IO_ERROR')
  t.equal(read(grpc.status.UNKNOWN), 'IO_ERROR')
  for (const s of Object.values(grpc.status).filter((v): v is number => typeof v === 'number')) {
    t.ok(isUkaiErrorCode(codeOfStatus(s)), `${grpc.status[s]} reads as a code`)
  }
  const bogus = new grpc.Metadata()
  bogus.set('ukai-code', 'NO_SUCH_CODE')
  t.equal(trailerCode({ metadata: bogus }), undefined, 'an unknown trailer is ignored')
  t.equal(codeOfServiceError({ code: grpc.status.NOT_FOUND, metadata: bogus }), 'NOT_FOUND', 'and the status decides')
})

t.test('only an unreachable node reads as UNAVAILABLE', async t => {
  for (const code of UKAI_ERROR_CODES) {
    const sent = toServiceError(new UkaiError(code, 'x'))
    const read = codeOfServiceError({ code: sent.code as grpc.status, metadata: sent.metadata as grpc.Metadata })
    t.equal(read === 'UNAVAILABLE', code === 'UNAVAILABLE', code)
  }
})
