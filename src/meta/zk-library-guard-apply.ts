// Side-effect import: patches node-zookeeper-client before any client exists (see zk-library-guard.ts).
import { applyZkLibraryGuard } from './zk-library-guard'

applyZkLibraryGuard()
