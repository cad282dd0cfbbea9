"""Running the roles: the whole stack as one command (:mod:`.stack`), the embedded broker
and simulated AWS processes (:mod:`.embedded`, :mod:`.processes`), and the health and
metrics server of the producers and worker roles (:mod:`.role_server`)."""
