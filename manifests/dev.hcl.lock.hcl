# This file is maintained by builder build; it records the digests of
# local inputs. Commit it. Run builder build -update-lock after changing an input.

input "payload.webui" {
  sha256 = "106b2028999585b047ed18de7522e69047a8f8d674e412879e0cc46fd7a4bbd4"
}
