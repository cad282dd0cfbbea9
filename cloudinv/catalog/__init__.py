"""The resource catalog: what a resource type is (:mod:`.spec`), the registered types
(:mod:`.registry`, :mod:`.resources`), how a configuration gives a resource's identity
(:mod:`.transform`) and what counts as a change (:mod:`.diff`). Imports only the core."""
