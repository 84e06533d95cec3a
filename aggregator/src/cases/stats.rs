//! Statistics from the event log (in progress).
