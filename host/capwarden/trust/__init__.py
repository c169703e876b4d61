"""Trust services for a fleet (issue 13): Ticket_Issuer, Descriptor_Issuer, revocation service
and Registration_Authority in one service (`capwarden trust serve`), and the terminal-side client
that the engine uses (`capwarden.trust.client`). Layout: docs/trust.md."""
