//! kube driver (in progress)
