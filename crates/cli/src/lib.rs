//! The one-process Quench node: a manager and, optionally, an edge in the same process. The `quench`
//! binary assembles it for `quench up` and `quench manager`; the black-box API tests and the fuzz
//! targets run the very same assembly. It lives with the binary so that neither the manager (the control
//! plane) nor the edge (the data plane) depends on the other.

pub mod embedded;
mod upstream;
