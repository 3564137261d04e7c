// Package sshx is ship's SSH client: one connection per host per command that
// carries everything ship does there: SFTP, the Docker Engine API and shipd's API
// (unix sockets on the host, reached with direct-streamlocal@openssh.com), and
// the odd remote command. It never prints, and never starts ssh or scp.
//
// # Host keys
//
// Dial checks the host key before it authenticates, against the user's
// known_hosts (~/.ssh/known_hosts), /etc/ssh/ssh_known_hosts and
// Options.KnownHostsFiles (a file committed in the app's repository, for CI);
// missing files are fine, hashed entries are understood, @revoked keys are
// refused. The host is looked up by its HostName and port ("web1", or
// "[web1]:2222" off port 22), not by its IP address (as ssh(1) with its default
// CheckHostIP=no). Dial asks for the key types known for the host, so that a host
// whose ed25519 key is known is not taken for a changed one for offering its RSA
// key first.
//
//   - An unknown host is refused with ErrUnknownHost (a *HostKeyError): the error
//     shows the key's type and SHA256 fingerprint and the exact line to add.
//     Options.AcceptNewHostKey (--accept-new-host-key) trusts it instead and
//     appends that line, unhashed, to the user's known_hosts (file 0600, folder
//     0700).
//   - A changed key is refused with ErrHostKeyChanged and a WARNING naming the
//     known key's file and line, always, AcceptNewHostKey or not. Nothing has been
//     sent to the host by then: no key was offered, no agent or passphrase asked.
//
// # Authentication
//
// Public keys only, offered in this order, each key once: ssh-agent's
// ($SSH_AUTH_SOCK), Options.KeyText (SHIP_SSH_KEY), then key files:
// Options.IdentityFiles, ssh_config's IdentityFile, and, when neither names one,
// ~/.ssh/id_ed25519, id_ecdsa and id_rsa. An encrypted key is offered by its
// public half (kept unencrypted in OpenSSH's format, or a .pub file beside it);
// its passphrase is asked for (Options.Passphrase) only when the host accepts
// it. Without Passphrase that is an ErrAuth error naming the key and saying to
// use ssh-agent or SHIP_SSH_KEY. When the host takes no key, the ErrAuth error
// names user@host and what was offered (sources and fingerprints, never key
// material).
//
// # ssh_config
//
// ~/.ssh/config (Options.ConfigFile) is read with github.com/kevinburke/ssh_config
// for the destination as written: HostName (with %h), User, Port, IdentityFile
// (with ~ and %d %h %n %p %r %u) and ProxyJump (one or more hops, comma-separated,
// "none"; the first hop's own ProxyJump is followed, as ssh(1) does). Every hop
// gets the same host key checks and the same keys, and is dialled through the one
// before. What the destination says beats ssh_config, which beats the defaults
// (the current user, port 22). A file that does not parse (Match exec, for one)
// is an error naming it, and so is a ProxyCommand: ship runs no commands to
// connect. Other keywords (IdentitiesOnly, IdentityAgent, UserKnownHostsFile,
// HostKeyAlias, ...) and /etc/ssh/ssh_config are not read.
//
// # Lifetime
//
// The context given to Dial is the connection's lifetime: cancelling it aborts
// the dial, or closes the Client and everything it carries. Options.DialTimeout
// bounds each hop's connect and handshake. Keepalives (every 15s by default)
// close a connection whose host stops answering 3 of them in a row; operations
// on it then fail saying so. Close closes everything and waits for the Client's
// goroutines.
package sshx
