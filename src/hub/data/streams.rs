//! Keyspace operations: streams. (Filled in as the RESP command files move their logic here.)
