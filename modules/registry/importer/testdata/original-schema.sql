-- The original registration server's schema (WebThingsIO/registration_server,
-- migrations up to 2019-08-09 applied in order), as a test fixture: the
-- importer must read databases that server created. The same statements
-- run on SQLite and PostgreSQL, split at each semicolon.
CREATE TABLE accounts (
    id    INTEGER PRIMARY KEY NOT NULL,
    email VARCHAR(254) NOT NULL UNIQUE);
CREATE TABLE domains (
    id                 INTEGER PRIMARY KEY NOT NULL,
    name               VARCHAR(253) NOT NULL UNIQUE,
    account_id         INTEGER NOT NULL,
    token              VARCHAR(36) NOT NULL,
    description        TEXT NOT NULL,
    timestamp          BIGINT NOT NULL,
    dns_challenge      VARCHAR(63) NOT NULL DEFAULT '',
    reclamation_token  VARCHAR(36) NOT NULL DEFAULT '',
    verification_token VARCHAR(36) NOT NULL DEFAULT '',
    verified           BOOLEAN NOT NULL DEFAULT FALSE,
    FOREIGN KEY(account_id) REFERENCES accounts(id) ON UPDATE CASCADE ON DELETE CASCADE);
ALTER TABLE domains ADD COLUMN continent VARCHAR(2) NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN optout BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE domains ADD COLUMN mode INTEGER NOT NULL DEFAULT 0;
ALTER TABLE domains ADD COLUMN last_ip VARCHAR(15) NOT NULL DEFAULT ''
