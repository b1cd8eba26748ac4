import Foundation

// The cluster worker (connect over ZeroMQ + CURVE, receive configurations, return gradients)
// is not built yet; until it is, say so plainly rather than pretend to run.
FileHandle.standardError.write(Data("""
neumeta-worker: the cluster worker is not available in this version. Train on one process with
`neumeta-coordinator train --base NET --out INR` (see README.md).

""".utf8))
exit(2)
