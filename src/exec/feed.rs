//! Feed: read, prepare and hand rows to the dispatcher.
