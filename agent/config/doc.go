// Package config loads the agent's single YAML configuration file.
//
// The agent runs unattended on customers' PBX appliances, and the person
// editing its file is usually a field technician working over SSH. A daemon
// that dies on the first typo and is restarted by its service manager costs
// one round trip per mistake, so Parse reports every problem in the file at
// once, each with its file:line and the full key path (sip.listen[1],
// commands.trusted_keys.platform-2026), and says what was given and what is
// wanted.
//
// To do that the file is parsed into a yaml.Node tree and walked against the
// Config struct by reflection instead of being handed to yaml.Unmarshal,
// which stops at the first type error, ignores unknown keys and forgets
// where each value came from. Validate then checks values and cross-field
// rules; its problems are mapped back to the line of the key (or of the
// nearest enclosing key when the key itself is absent from the file).
//
// Keys absent from the file keep the values of Default. An explicit null
// ("key:" with nothing after it) counts as absent. File names are only
// checked for form: whether a certificate or key file exists is for the
// component that opens it to find out, at the moment it matters.
//
// Phone numbers in lines are normalised to E.164 with store/phone, and
// messages about them never carry a whole number (see phone.Mask): config
// errors end up in logs and support tickets.
package config
