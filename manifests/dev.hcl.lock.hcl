# This file is maintained by builder build; it records the digests of
# local inputs. Commit it. Run builder build -update-lock after changing an input.

input "payload.webui" {
  sha256 = "d4d126ef28fe42fca8441299bcf278f37f210f34acd4991b70823c70b4349b43"
}
