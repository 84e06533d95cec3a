//! Where readings come from. Only Modbus for now; cameras and drones join as sibling modules.

pub mod modbus;
