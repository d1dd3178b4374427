//! kiln: builds bootable appliance images from one recipe. The binary
//! (`cargo xtask`) is a thin dispatcher over this library; integration tests
//! use the library to build fixtures with the same tool wrappers.

pub mod archive;
pub mod bench;
pub mod containers;
pub mod cx;
pub mod digest;
pub mod doctor;
pub mod download;
pub mod epoch;
pub mod exec;
pub mod export;
pub mod flags;
pub mod fsutil;
pub mod hostapt;
pub mod identity;
pub mod initrd;
pub mod iso;
pub mod ova;
pub mod pi;
pub mod plan;
pub mod qcow2;
pub mod recipe;
pub mod release;
pub mod scan;
pub mod seed;
pub mod signals;
pub mod smoke;
pub mod stage;
pub mod suite;
pub mod targets;
pub mod testing;
pub mod tools;
pub mod ui;
pub mod verbs;
