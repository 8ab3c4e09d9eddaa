//! Dispatch: the semaphore, one task per row, and its growth.
