//! How the fan-in reacts to an event: which transitions to apply, which lifecycle events
//! to record. Pure: the fan-in function does the I/O around it.
